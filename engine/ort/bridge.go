//go:build cgo

package ort

// The bridge: the few ORT C API calls onnxruntime_go does not expose
// (memory infos other than its one CPU info, tensors over caller-owned
// memory, IO binding on sessions we create ourselves). onnxruntime_go keeps
// its OrtApi and session pointers private, so this file reaches the same
// loaded library through its own OrtApi table.
//
// include/ holds ORT's C API headers as onnxruntime_go v1.27.0 vendors them
// (ORT 1.24.1, ORT_API_VERSION 24; see include/README.md). The C API is
// ABI-stable: a newer library (ours is 1.30.0) serves GetApi(24) with the
// 1.24 table layout, and an older one returns NULL, which Init reports.
//
// All C lives in this one preamble (static functions), so the package has no
// .c files and still builds with CGO_ENABLED=0 (ort_nocgo.go).

/*
#cgo CFLAGS: -I${SRCDIR}/include -O2
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "onnxruntime_c_api.h"

#define FALORT_API_VERSION 24
_Static_assert(ORT_API_VERSION == FALORT_API_VERSION,
	"include/onnxruntime_c_api.h must be the ORT_API_VERSION 24 header the bridge requests");

static const OrtApi* falort_api;
static OrtEnv* falort_env;

// falort_load finds the already loaded library by path (RTLD_NOLOAD: it
// never loads a second copy), takes its OrtApi table and creates (or, since
// ORT keeps one refcounted environment per process, joins) the environment.
// The handle is not closed: the library stays loaded for the process.
static const char* falort_load(const char* path, const char** version) {
	dlerror();
	void* h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	if (h == NULL) {
		const char* e = dlerror();
		return e ? e : "library not loaded";
	}
	typedef const OrtApiBase* (*base_fn)(void);
	base_fn f = (base_fn)dlsym(h, "OrtGetApiBase");
	if (f == NULL) {
		const char* e = dlerror();
		return e ? e : "no OrtGetApiBase";
	}
	const OrtApiBase* base = f();
	*version = base->GetVersionString();
	const OrtApi* api = base->GetApi(FALORT_API_VERSION);
	if (api == NULL) {
		return "the library lacks ORT C API version 24 (needs ONNX Runtime 1.24 or later)";
	}
	falort_api = api;
	return NULL;
}

static OrtStatus* falort_create_env(void) {
	return falort_api->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "falocal-bridge", &falort_env);
}

static const char* falort_status_msg(OrtStatus* s) { return falort_api->GetErrorMessage(s); }
static int falort_status_code(OrtStatus* s) { return (int)falort_api->GetErrorCode(s); }
static void falort_release_status(OrtStatus* s) { falort_api->ReleaseStatus(s); }

static OrtStatus* falort_session_options(int intra, OrtSessionOptions** out) {
	OrtSessionOptions* so = NULL;
	OrtStatus* st = falort_api->CreateSessionOptions(&so);
	if (st) return st;
	if (intra > 0 && (st = falort_api->SetIntraOpNumThreads(so, intra))) goto fail;
	if ((st = falort_api->SetInterOpNumThreads(so, 1))) goto fail;
	if ((st = falort_api->SetSessionGraphOptimizationLevel(so, ORT_ENABLE_ALL))) goto fail;
	*out = so;
	return NULL;
fail:
	falort_api->ReleaseSessionOptions(so);
	return st;
}

static void falort_release_session_options(OrtSessionOptions* so) { falort_api->ReleaseSessionOptions(so); }

static OrtStatus* falort_append_cuda(OrtSessionOptions* so, const char** keys, const char** vals, size_t n) {
	OrtCUDAProviderOptionsV2* o = NULL;
	OrtStatus* st = falort_api->CreateCUDAProviderOptions(&o);
	if (st) return st;
	st = falort_api->UpdateCUDAProviderOptions(o, keys, vals, n);
	if (!st) st = falort_api->SessionOptionsAppendExecutionProvider_CUDA_V2(so, o);
	falort_api->ReleaseCUDAProviderOptions(o);
	return st;
}

static OrtStatus* falort_append_tensorrt(OrtSessionOptions* so, const char** keys, const char** vals, size_t n) {
	OrtTensorRTProviderOptionsV2* o = NULL;
	OrtStatus* st = falort_api->CreateTensorRTProviderOptions(&o);
	if (st) return st;
	st = falort_api->UpdateTensorRTProviderOptions(o, keys, vals, n);
	if (!st) st = falort_api->SessionOptionsAppendExecutionProvider_TensorRT_V2(so, o);
	falort_api->ReleaseTensorRTProviderOptions(o);
	return st;
}

static OrtStatus* falort_create_session(const char* path, OrtSessionOptions* so, OrtSession** out) {
	return falort_api->CreateSession(falort_env, path, so, out);
}

static void falort_release_session(OrtSession* s) { falort_api->ReleaseSession(s); }

// kind: 0 CPU, 1 CUDA, 2 CUDA pinned host memory.
static OrtStatus* falort_memory_info(int kind, int device, OrtMemoryInfo** out) {
	switch (kind) {
	case 0:
		return falort_api->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, out);
	case 1:
		return falort_api->CreateMemoryInfo("Cuda", OrtArenaAllocator, device, OrtMemTypeDefault, out);
	case 2:
		return falort_api->CreateMemoryInfo("CudaPinned", OrtDeviceAllocator, device, OrtMemTypeCPUOutput, out);
	}
	return falort_api->CreateStatus(ORT_INVALID_ARGUMENT, "unknown memory place");
}

static void falort_release_memory_info(OrtMemoryInfo* m) { falort_api->ReleaseMemoryInfo(m); }

static OrtStatus* falort_wrap(const OrtMemoryInfo* info, uintptr_t data, size_t len, const int64_t* shape,
		size_t rank, int type, OrtValue** out) {
	return falort_api->CreateTensorWithDataAsOrtValue(info, (void*)data, len, shape, rank,
		(ONNXTensorElementDataType)type, out);
}

static void falort_release_value(OrtValue* v) { falort_api->ReleaseValue(v); }

// falort_describe reads a tensor value's element type, shape (up to cap
// dimensions; *rank is the true rank), data pointer and memory place.
static OrtStatus* falort_describe(OrtValue* v, int* has, int* type, int64_t* dims, size_t cap, size_t* rank,
		uintptr_t* data, const char** mem_name, int* mem_id, int* dev_type) {
	OrtStatus* st = falort_api->HasValue(v, has);
	if (st || !*has) return st;
	int is_tensor = 0;
	if ((st = falort_api->IsTensor(v, &is_tensor))) return st;
	if (!is_tensor) return falort_api->CreateStatus(ORT_INVALID_ARGUMENT, "value is not a tensor");
	OrtTensorTypeAndShapeInfo* info = NULL;
	if ((st = falort_api->GetTensorTypeAndShape(v, &info))) return st;
	ONNXTensorElementDataType t;
	if ((st = falort_api->GetTensorElementType(info, &t))) goto done;
	*type = (int)t;
	if ((st = falort_api->GetDimensionsCount(info, rank))) goto done;
	if (*rank <= cap && (st = falort_api->GetDimensions(info, dims, *rank))) goto done;
	void* p = NULL;
	if ((st = falort_api->GetTensorMutableData(v, &p))) goto done;
	*data = (uintptr_t)p;
	const OrtMemoryInfo* m = NULL;
	if ((st = falort_api->GetTensorMemoryInfo(v, &m))) goto done;
	if ((st = falort_api->MemoryInfoGetName(m, mem_name))) goto done;
	if ((st = falort_api->MemoryInfoGetId(m, mem_id))) goto done;
	OrtMemoryInfoDeviceType dt;
	falort_api->MemoryInfoGetDeviceType(m, &dt);
	*dev_type = (int)dt;
done:
	falort_api->ReleaseTensorTypeAndShapeInfo(info);
	return st;
}

static OrtStatus* falort_create_binding(OrtSession* s, OrtIoBinding** out) {
	return falort_api->CreateIoBinding(s, out);
}
static void falort_release_binding(OrtIoBinding* b) { falort_api->ReleaseIoBinding(b); }
static OrtStatus* falort_bind_input(OrtIoBinding* b, const char* name, const OrtValue* v) {
	return falort_api->BindInput(b, name, v);
}
static OrtStatus* falort_bind_output(OrtIoBinding* b, const char* name, const OrtValue* v) {
	return falort_api->BindOutput(b, name, v);
}
static OrtStatus* falort_bind_output_to_device(OrtIoBinding* b, const char* name, const OrtMemoryInfo* m) {
	return falort_api->BindOutputToDevice(b, name, m);
}
static void falort_clear_inputs(OrtIoBinding* b) { falort_api->ClearBoundInputs(b); }
static void falort_clear_outputs(OrtIoBinding* b) { falort_api->ClearBoundOutputs(b); }
static OrtStatus* falort_sync_inputs(OrtIoBinding* b) { return falort_api->SynchronizeBoundInputs(b); }
static OrtStatus* falort_sync_outputs(OrtIoBinding* b) { return falort_api->SynchronizeBoundOutputs(b); }

static OrtStatus* falort_run_options(OrtRunOptions** out) { return falort_api->CreateRunOptions(out); }
static OrtStatus* falort_terminate(OrtRunOptions* o) { return falort_api->RunOptionsSetTerminate(o); }
static void falort_release_run_options(OrtRunOptions* o) { falort_api->ReleaseRunOptions(o); }
static OrtStatus* falort_run(OrtSession* s, OrtRunOptions* o, OrtIoBinding* b) {
	return falort_api->RunWithBinding(s, o, b);
}

static void falort_copy(void* dst, uintptr_t src, size_t n) { memcpy(dst, (const void*)src, n); }

static void falort_free(OrtAllocator* a, void* p) {
	if (p == NULL) return;
	OrtStatus* st = falort_api->AllocatorFree(a, p);
	if (st) falort_api->ReleaseStatus(st);
}

// falort_bound_outputs returns the bound output values (each to be released
// by the caller) and their names, copied into caller-freed (free) C memory:
// names as one buffer of NUL-terminated strings.
static OrtStatus* falort_bound_outputs(OrtIoBinding* b, OrtValue*** vals, char** names, size_t* n) {
	*vals = NULL;
	*names = NULL;
	*n = 0;
	OrtAllocator* a = NULL;
	OrtStatus* st = falort_api->GetAllocatorWithDefaultOptions(&a);
	if (st) return st;
	char* buf = NULL;
	size_t* lens = NULL;
	size_t count = 0;
	if ((st = falort_api->GetBoundOutputNames(b, a, &buf, &lens, &count))) return st;
	if (count == 0) return NULL;
	size_t total = 0;
	for (size_t i = 0; i < count; i++) total += lens[i] + 1;
	char* out_names = malloc(total);
	OrtValue** out_vals = malloc(count * sizeof(OrtValue*));
	if (out_names == NULL || out_vals == NULL) {
		st = falort_api->CreateStatus(ORT_FAIL, "out of memory");
		goto done;
	}
	char* dst = out_names;
	const char* src = buf;
	for (size_t i = 0; i < count; i++) {
		memcpy(dst, src, lens[i]);
		dst[lens[i]] = 0;
		dst += lens[i] + 1;
		src += lens[i];
	}
	OrtValue** got = NULL;
	size_t got_n = 0;
	if ((st = falort_api->GetBoundOutputValues(b, a, &got, &got_n))) goto done;
	if (got_n != count) {
		for (size_t i = 0; i < got_n; i++) falort_api->ReleaseValue(got[i]);
		st = falort_api->CreateStatus(ORT_FAIL, "bound output names and values differ in number");
	} else {
		memcpy(out_vals, got, count * sizeof(OrtValue*));
	}
	falort_free(a, got);
done:
	falort_free(a, buf);
	falort_free(a, lens);
	if (st) {
		free(out_names);
		free(out_vals);
		return st;
	}
	*vals = out_vals;
	*names = out_names;
	*n = count;
	return NULL;
}
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/falocal/falocal/engine"
)

// APIVersion is the ORT C API version the bridge requests: the one its
// vendored header (include/onnxruntime_c_api.h) declares.
const APIVersion = C.FALORT_API_VERSION

var (
	bridgeOnce    sync.Once
	bridgeErr     error
	bridgeVersion string

	memInfoMu sync.Mutex
	memInfos  = map[Place]*C.OrtMemoryInfo{} // one per place, kept for the process
)

// loadBridge takes the OrtApi table of the library Init loaded (once).
func (r *Runtime) loadBridge() error {
	bridgeOnce.Do(func() {
		path := C.CString(r.info.Library)
		defer C.free(unsafe.Pointer(path))
		var version *C.char
		if msg := C.falort_load(path, &version); msg != nil {
			bridgeErr = fmt.Errorf("ort: bridge to %s: %s", r.info.Library, C.GoString(msg))
			return
		}
		bridgeVersion = C.GoString(version)
		if err := status(C.falort_create_env()); err != nil {
			bridgeErr = fmt.Errorf("ort: bridge environment: %w", err)
		}
	})
	return bridgeErr
}

// StatusError is an error ORT returned through its C API.
type StatusError struct {
	Code int // OrtErrorCode
	Msg  string
}

func (e *StatusError) Error() string { return e.Msg }

// status turns an OrtStatus into an error, releasing it.
func status(st *C.OrtStatus) error {
	if st == nil {
		return nil
	}
	defer C.falort_release_status(st)
	return &StatusError{Code: int(C.falort_status_code(st)), Msg: C.GoString(C.falort_status_msg(st))}
}

// memoryInfo returns the process's OrtMemoryInfo for a place.
func memoryInfo(p Place) (*C.OrtMemoryInfo, error) {
	memInfoMu.Lock()
	defer memInfoMu.Unlock()
	if m, ok := memInfos[p]; ok {
		return m, nil
	}
	var kind C.int
	switch p.Kind {
	case PlaceCPU:
		kind = 0
	case PlaceCUDA:
		kind = 1
	case PlaceCUDAPinned:
		kind = 2
	default:
		return nil, fmt.Errorf("ort: unknown memory place %v", p)
	}
	var m *C.OrtMemoryInfo
	if err := status(C.falort_memory_info(kind, C.int(p.Device), &m)); err != nil {
		return nil, fmt.Errorf("ort: memory info for %s: %w", p, err)
	}
	memInfos[p] = m
	return m, nil
}

// cStrings copies a map into parallel C string arrays; free releases them.
func cStrings(m map[string]string) (keys, vals []*C.char, free func()) {
	for k, v := range m {
		keys = append(keys, C.CString(k))
		vals = append(vals, C.CString(v))
	}
	return keys, vals, func() {
		for i := range keys {
			C.free(unsafe.Pointer(keys[i]))
			C.free(unsafe.Pointer(vals[i]))
		}
	}
}

// appendProviderC is appendProvider for the bridge's own session options:
// the same provider options (providerOptions), through ORT's V2 calls.
func appendProviderC(so *C.OrtSessionOptions, p engine.Provider, spec engine.SessionSpec) error {
	opts, err := providerOptions(p, spec)
	if err != nil {
		return err
	}
	keys, vals, free := cStrings(opts)
	defer free()
	switch p {
	case engine.CUDA:
		return status(C.falort_append_cuda(so, &keys[0], &vals[0], C.size_t(len(keys))))
	case engine.TensorRT:
		return status(C.falort_append_tensorrt(so, &keys[0], &vals[0], C.size_t(len(keys))))
	}
	return fmt.Errorf("unknown provider %q", p)
}

// Thin Go wrappers over the preamble, one per C call; bound.go builds the
// API on them.

func newSessionOptionsC(intra int) (*C.OrtSessionOptions, error) {
	var so *C.OrtSessionOptions
	return so, status(C.falort_session_options(C.int(intra), &so))
}

func releaseSessionOptionsC(so *C.OrtSessionOptions) { C.falort_release_session_options(so) }

func createSessionC(path string, so *C.OrtSessionOptions) (*C.OrtSession, error) {
	p := C.CString(path)
	defer C.free(unsafe.Pointer(p))
	var s *C.OrtSession
	return s, status(C.falort_create_session(p, so, &s))
}

func releaseSessionC(s *C.OrtSession) { C.falort_release_session(s) }

func wrapC(m *C.OrtMemoryInfo, ptr uintptr, size int64, dt engine.DType, shape []int64) (*C.OrtValue, error) {
	var dims *C.int64_t
	if len(shape) > 0 {
		// A Go []int64 holds no Go pointers, and ORT copies the shape.
		dims = (*C.int64_t)(unsafe.Pointer(&shape[0]))
	}
	var v *C.OrtValue
	err := status(C.falort_wrap(m, C.uintptr_t(ptr), C.size_t(size), dims, C.size_t(len(shape)), C.int(toORT(dt)), &v))
	return v, err
}

func releaseValueC(v *C.OrtValue) { C.falort_release_value(v) }

// tensorDesc is what ORT says about a tensor value.
type tensorDesc struct {
	dtype engine.DType
	onnx  int // ONNX element type, for messages about unsupported ones
	shape []int64
	data  uintptr
	place Place
}

var errNoValue = fmt.Errorf("no value (the output is allocated by the next run)")

func describeC(v *C.OrtValue) (tensorDesc, error) {
	var (
		has, typ, memID, devType C.int
		rank                     C.size_t
		data                     C.uintptr_t
		memName                  *C.char
		dims                     [16]C.int64_t
	)
	err := status(C.falort_describe(v, &has, &typ, &dims[0], C.size_t(len(dims)), &rank, &data, &memName, &memID, &devType))
	if err != nil {
		return tensorDesc{}, err
	}
	if has == 0 {
		return tensorDesc{}, errNoValue
	}
	if int(rank) > len(dims) {
		return tensorDesc{}, fmt.Errorf("rank %d above the bridge's %d", rank, len(dims))
	}
	d := tensorDesc{onnx: int(typ), shape: make([]int64, rank), data: uintptr(data)}
	d.dtype, _ = fromORT(ortgo.TensorElementDataType(typ))
	for i := range d.shape {
		d.shape[i] = int64(dims[i])
	}
	switch name := C.GoString(memName); {
	case name == "CudaPinned":
		d.place = CUDAPinnedPlace(int(memID))
	case name == "Cuda" || devType == C.OrtMemoryInfoDeviceType_GPU:
		d.place = CUDAPlace(int(memID))
	default:
		d.place = CPUPlace()
	}
	return d, nil
}

func createBindingC(s *C.OrtSession) (*C.OrtIoBinding, error) {
	var b *C.OrtIoBinding
	return b, status(C.falort_create_binding(s, &b))
}

func releaseBindingC(b *C.OrtIoBinding) { C.falort_release_binding(b) }

func bindC(b *C.OrtIoBinding, input bool, name string, v *C.OrtValue) error {
	n := C.CString(name)
	defer C.free(unsafe.Pointer(n))
	if input {
		return status(C.falort_bind_input(b, n, v))
	}
	return status(C.falort_bind_output(b, n, v))
}

func bindToDeviceC(b *C.OrtIoBinding, name string, m *C.OrtMemoryInfo) error {
	n := C.CString(name)
	defer C.free(unsafe.Pointer(n))
	return status(C.falort_bind_output_to_device(b, n, m))
}

func clearC(b *C.OrtIoBinding, inputs bool) {
	if inputs {
		C.falort_clear_inputs(b)
	} else {
		C.falort_clear_outputs(b)
	}
}

func syncC(b *C.OrtIoBinding, inputs bool) error {
	if inputs {
		return status(C.falort_sync_inputs(b))
	}
	return status(C.falort_sync_outputs(b))
}

func newRunOptionsC() (*C.OrtRunOptions, error) {
	var o *C.OrtRunOptions
	return o, status(C.falort_run_options(&o))
}

func terminateC(o *C.OrtRunOptions) error { return status(C.falort_terminate(o)) }

func releaseRunOptionsC(o *C.OrtRunOptions) { C.falort_release_run_options(o) }

func runC(s *C.OrtSession, o *C.OrtRunOptions, b *C.OrtIoBinding) error {
	return status(C.falort_run(s, o, b))
}

// boundOutputsC returns the bound outputs' names and values, in binding
// order; the caller releases every value.
func boundOutputsC(b *C.OrtIoBinding) ([]string, []*C.OrtValue, error) {
	var (
		vals  **C.OrtValue
		names *C.char
		n     C.size_t
	)
	if err := status(C.falort_bound_outputs(b, &vals, &names, &n)); err != nil {
		return nil, nil, err
	}
	if n == 0 {
		return nil, nil, nil
	}
	defer C.free(unsafe.Pointer(vals))
	defer C.free(unsafe.Pointer(names))
	vs := append([]*C.OrtValue(nil), unsafe.Slice(vals, int(n))...)
	ns := make([]string, n)
	p := names
	for i := range ns {
		ns[i] = C.GoString(p)
		p = (*C.char)(unsafe.Add(unsafe.Pointer(p), len(ns[i])+1))
	}
	return ns, vs, nil
}

// copyFromC copies len(dst) bytes of C or pinned host memory at src.
func copyFromC(dst []byte, src uintptr) {
	if len(dst) > 0 {
		C.falort_copy(unsafe.Pointer(&dst[0]), C.uintptr_t(src), C.size_t(len(dst)))
	}
}

// hostAlloc and hostFree back HostMemory (C memory, outside Go's heap).
func hostAlloc(n int64) unsafe.Pointer { return C.calloc(1, C.size_t(n)) }

func hostFree(p unsafe.Pointer) { C.free(p) }
