package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/api/queue/pgqueue"
	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/weights"
)

// finding is one check's result: what was found and, unless ok, the fix.
type finding struct {
	Check  string `json:"check"`
	Status string `json:"status"` // ok, warn or FAIL
	Text   string `json:"finding"`
	Fix    string `json:"fix,omitempty"`
}

const (
	statusOK   = "ok"
	statusWarn = "warn"
	statusFail = "FAIL"
)

// doctorCmd is 'falocal doctor': checks of this machine, each with a fix.
// It reads the settings serve would (flags, environment, -config), so it
// checks what that serve would use.
func doctorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON bool
	c, fset, err := parse("doctor", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print the findings as a JSON array")
	})
	if err != nil {
		return err
	}
	if fset.NArg() > 0 {
		return fmt.Errorf("doctor: unexpected argument %q", fset.Arg(0))
	}
	found := doctor(ctx, c)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(found); err != nil {
			return err
		}
	} else {
		printFindings(stdout, found)
	}
	nfail := 0
	for _, f := range found {
		if f.Status == statusFail {
			nfail++
		}
	}
	if nfail > 0 {
		return fmt.Errorf("doctor: %d check(s) failed", nfail)
	}
	return nil
}

func printFindings(w io.Writer, found []finding) {
	for _, f := range found {
		fmt.Fprintf(w, "%-4s  %s: %s\n", f.Status, f.Check, f.Text)
		if f.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", f.Fix)
		}
	}
}

// doctor runs every check in turn.
func doctor(ctx context.Context, c *Config) []finding {
	var out []finding
	rt, rtFinding := checkRuntime(c)
	out = append(out, rtFinding)
	var info *engine.Info
	if rt != nil {
		i := rt.Info()
		info = &i
	}
	out = append(out, checkProviders(c, info))
	out = append(out, checkGPU(ctx, c, info))
	out = append(out, checkModels(c)...)
	out = append(out, checkDisk(c))
	out = append(out, checkListen(c))
	out = append(out, checkQueue(c))
	return out
}

func passed(check, text string) finding { return finding{check, statusOK, text, ""} }

func warned(check, text, fix string) finding { return finding{check, statusWarn, text, fix} }

func failed(check, text, fix string) finding { return finding{check, statusFail, text, fix} }

// checkRuntime loads ONNX Runtime as serve does.
func checkRuntime(c *Config) (engine.Runtime, finding) {
	const name = "onnx runtime"
	lib := ortLibrary(c)
	if _, err := os.Stat(lib); err != nil {
		fix := "falocal setup"
		if c.ORTLibrary != "" {
			fix = "point -ort-library at an existing libonnxruntime.so, or leave it unset and run 'falocal setup'"
		}
		return nil, failed(name, "library "+lib+" not found", fix)
	}
	rt, _, err := openRuntime(c, slog.New(slog.DiscardHandler))
	if err != nil {
		fix := "point -ort-library at a libonnxruntime.so built for this machine, or leave it unset and run 'falocal setup'"
		if strings.Contains(err.Error(), "CGO_ENABLED=0") {
			fix = "build falocal with cgo: CGO_ENABLED=1 go build ./cmd/falocal"
		}
		return nil, failed(name, fmt.Sprintf("library %s does not load: %v", lib, err), fix)
	}
	info := rt.Info()
	return rt, passed(name, fmt.Sprintf("%s loads, version %s, providers %s", info.Library, info.Version, providerList(info.Providers)))
}

func providerList(ps []engine.Provider) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ",")
}

// checkProviders compares the providers asked for (-providers,
// -model-providers) with those the library offers.
func checkProviders(c *Config, info *engine.Info) finding {
	const name = "providers"
	if info == nil {
		return failed(name, "unknown: the runtime library did not load", "fix the onnx runtime check first")
	}
	if c.Providers == "auto" && len(c.modelProviders) == 0 {
		return passed(name, "auto: "+providerList(info.Providers))
	}
	want := map[engine.Provider][]string{} // provider → who asks for it
	if c.Providers != "auto" {
		ps, err := engine.ParseProviders(c.Providers)
		if err != nil {
			return failed(name, err.Error(), "-providers auto")
		}
		for _, p := range ps {
			want[p] = append(want[p], "-providers")
		}
	}
	for model, m := range c.modelProviders {
		for _, p := range m.Providers {
			want[p] = append(want[p], "-model-providers "+model)
		}
	}
	var missing []string
	for _, p := range []engine.Provider{engine.TensorRT, engine.CUDA} {
		if len(want[p]) == 0 || slices.Contains(info.Providers, p) {
			continue
		}
		why := unavailableReason(info.Unavailable[p])
		missing = append(missing, fmt.Sprintf("%s (asked by %s) is not in this library: %s", p, strings.Join(want[p], ", "), why))
	}
	if len(missing) > 0 {
		return failed(name, strings.Join(missing, "; "),
			"point -ort-library at ONNX Runtime's GPU build (docs/gpu.md), or run on the CPU with -providers cpu")
	}
	return passed(name, fmt.Sprintf("%s asked, all offered by the library (%s)", c.Providers, providerList(info.Providers)))
}

// unavailableReason shortens ONNX Runtime's refusal of a provider: a
// CPU-only build lacks the shared provider library.
func unavailableReason(why string) string {
	switch {
	case why == "":
		return "not offered"
	case strings.Contains(why, "libonnxruntime_providers_shared.so"):
		return "a CPU-only build (no libonnxruntime_providers_shared.so beside it)"
	}
	return why
}

// gpuReport is what nvidia-smi says of the machine's NVIDIA GPUs.
type gpuReport struct {
	driver, cuda string
	gpus         []string // "NVIDIA H100 80GB HBM3, 81559 MiB"
}

// probeGPU asks nvidia-smi; a machine without it has no usable NVIDIA GPU.
func probeGPU(ctx context.Context) (*gpuReport, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := exec.CommandContext(ctx, "nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader").Output()
	if err != nil {
		return nil, err
	}
	head, err := exec.CommandContext(ctx, "nvidia-smi").Output()
	if err != nil {
		return nil, err
	}
	return parseNvidiaSMI(string(list), string(head)), nil
}

var cudaVersionRE = regexp.MustCompile(`CUDA Version:\s*([0-9.]+)`)

// parseNvidiaSMI reads the GPU query's CSV lines and the CUDA version from
// the banner of a plain nvidia-smi.
func parseNvidiaSMI(list, banner string) *gpuReport {
	r := &gpuReport{}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		r.gpus = append(r.gpus, strings.TrimSpace(f[0])+", "+strings.TrimSpace(f[1]))
		r.driver = strings.TrimSpace(f[2])
	}
	if m := cudaVersionRE.FindStringSubmatch(banner); m != nil {
		r.cuda = m[1]
	}
	return r
}

// checkGPU reports the NVIDIA GPUs, driver and CUDA version. No GPU is
// fine on the CPU; it fails only when a GPU provider is asked for.
func checkGPU(ctx context.Context, c *Config, info *engine.Info) finding {
	const name = "gpu"
	asked := gpuAsked(c)
	r, err := probeGPU(ctx)
	var text, fix string
	visible := 0 // the GPUs CUDA numbers
	if err != nil || len(r.gpus) == 0 {
		text = "no NVIDIA GPU found (nvidia-smi: " + errText(err, "no GPUs listed") + ")"
		fix = "install the NVIDIA driver (nvidia-smi must list the GPU)"
	} else {
		text = fmt.Sprintf("%s; driver %s, CUDA %s", strings.Join(r.gpus, "; "), r.driver, orUnknown(r.cuda))
		visible = len(r.gpus)
		// nvidia-smi lists every GPU; CUDA numbers only those it is shown.
		if v, ok := os.LookupEnv("CUDA_VISIBLE_DEVICES"); ok {
			visible = visibleGPUs(v, len(r.gpus))
			text += fmt.Sprintf("; CUDA_VISIBLE_DEVICES=%q shows %d", v, visible)
			fix = "set CUDA_VISIBLE_DEVICES to the GPUs to use"
		}
	}
	if visible == 0 {
		if asked {
			return failed(name, text+", but -providers asks for a GPU", fix+", or run on the CPU with -providers cpu")
		}
		if info != nil && slices.ContainsFunc(info.Providers, isGPUProvider) {
			return warned(name, text+"; the library offers "+providerList(info.Providers)+" but models will run on the CPU",
				fix+", or -providers cpu")
		}
		return passed(name, text+": models run on the CPU")
	}
	if c.DeviceID >= visible {
		f := fmt.Sprintf("-device 0 (up to %d)", visible-1)
		if fix != "" {
			f += ", or " + fix
		}
		return failed(name, fmt.Sprintf("%s; -device %d is not one of them", text, c.DeviceID), f)
	}
	if info != nil && !slices.ContainsFunc(info.Providers, isGPUProvider) {
		return warned(name, text+"; but the runtime library is CPU-only, so the GPU stays unused",
			"point -ort-library at ONNX Runtime's GPU build (docs/gpu.md)")
	}
	if !gpuBuilt {
		text += "; this binary has no VRAM pool or own CUDA kernels (built without -tags cuda)"
	}
	return passed(name, text)
}

// visibleGPUs is how many of n GPUs CUDA numbers under
// CUDA_VISIBLE_DEVICES=v: the entries (indices, GPU- or MIG- UUIDs) up to
// the first invalid one, which ends the list for CUDA.
func visibleGPUs(v string, n int) int {
	count := 0
	for _, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		if i, err := strconv.Atoi(e); err == nil {
			if i < 0 || i >= n {
				break
			}
		} else if !strings.HasPrefix(e, "GPU-") && !strings.HasPrefix(e, "MIG-") {
			break
		}
		count++
	}
	return min(count, n)
}

func gpuAsked(c *Config) bool {
	if c.Providers != "auto" {
		if ps, err := engine.ParseProviders(c.Providers); err == nil && slices.ContainsFunc(ps, isGPUProvider) {
			return true
		}
	}
	for _, m := range c.modelProviders {
		if slices.ContainsFunc(m.Providers, isGPUProvider) {
			return true
		}
	}
	return false
}

func isGPUProvider(p engine.Provider) bool { return p != engine.CPU }

func errText(err error, none string) string {
	if err == nil {
		return none
	}
	var ee *exec.Error
	if errors.As(err, &ee) {
		return "not installed"
	}
	return err.Error()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// checkModels lists the installed models and re-hashes their files as
// 'falocal weights verify' does: one finding for the store, one more per
// model that fails.
func checkModels(c *Config) []finding {
	const name = "models"
	setup := "falocal setup -data-dir " + c.DataDir
	// The store is opened only when it exists: a doctor does not create
	// a data directory.
	if _, err := os.Stat(filepath.Join(c.DataDir, "manifests")); err != nil {
		return []finding{failed(name, "no model store in "+c.DataDir, setup)}
	}
	store, err := weights.Open(c.DataDir)
	if err != nil {
		return []finding{failed(name, err.Error(), setup)}
	}
	all, err := store.List()
	if err != nil {
		return []finding{failed(name, err.Error(), setup)}
	}
	if len(all) == 0 {
		return []finding{failed(name, "no models installed in "+c.DataDir, setup)}
	}
	var out []finding
	var size int64
	var names []string
	for _, m := range all {
		names = append(names, m.Name)
		size += modelSize(m)
		if err := store.Verify(m.Name); err != nil {
			fix := "falocal weights remove " + m.Name + ", then import it again"
			if _, ok := weights.Lookup(m.Name); ok {
				fix = "falocal weights install " + m.Name
			}
			out = append(out, failed("model "+m.Name, err.Error(), fix))
		}
	}
	// Models the settings name must be installed: serve refuses them on
	// first use otherwise.
	named := []struct{ flag, model string }{
		{"-rembg-model", c.RembgModel}, {"-whisper-model", c.WhisperModel}, {"-wizper-model", c.WizperModel},
	}
	for model := range c.modelProviders {
		named = append(named, struct{ flag, model string }{"-model-providers", model})
	}
	for _, model := range list(c.UpscaleModels) {
		named = append(named, struct{ flag, model string }{"-upscale-model", model})
	}
	for _, n := range named {
		if n.model == "" || slices.Contains(names, n.model) {
			continue
		}
		fix := "install it (falocal weights install " + n.model + ") or name an installed model"
		if _, ok := weights.Lookup(n.model); !ok {
			fix = "name an installed model: falocal weights list"
		}
		out = append(out, failed("model "+n.model, n.flag+" names it, but it is not installed", fix))
	}
	// serve refuses to start on these
	if err := pinUpscalers(map[string]string{}, list(c.UpscaleModels), all, slog.New(slog.DiscardHandler)); err != nil {
		out = append(out, failed("upscale models", err.Error(), "name installed upscalers, each serving its own fal models, in -upscale-model"))
	}
	var missing []string
	for _, r := range weights.Catalog() {
		if r.Default && !slices.Contains(names, r.Name) {
			missing = append(missing, r.Name)
		}
	}
	text := fmt.Sprintf("%d installed (%s) in %s: %s", len(all), files.HumanBytes(size), store.Dir(), strings.Join(names, ", "))
	switch {
	case len(out) > 0:
		text += fmt.Sprintf("; %d model(s) failed verification or are missing", len(out))
		return append([]finding{failed(name, text, "see the models below")}, out...)
	case len(missing) > 0:
		return []finding{warned(name, text+"; all verified, but default models are missing: "+strings.Join(missing, ", "), setup)}
	}
	return []finding{passed(name, text+"; all verified")}
}

// checkDisk compares the data directory's free space with -min-free-disk,
// under which the server refuses new work with a 507.
func checkDisk(c *Config) finding {
	const name = "disk"
	dir := c.DataDir
	// A data directory not made yet lands on its nearest existing parent.
	for {
		if _, err := os.Stat(dir); err == nil || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir)
	}
	free, err := files.FreeSpace(dir)
	if err != nil {
		return warned(name, "free space of "+dir+" unknown: "+err.Error(), "check that "+dir+" is readable")
	}
	text := fmt.Sprintf("%s free on the filesystem of %s", files.HumanBytes(free), dir)
	fix := fmt.Sprintf("free space on that filesystem, move the data with -data-dir, or lower -min-free-disk (now %d)", c.MinFreeDisk)
	switch {
	case c.MinFreeDisk <= 0:
		return passed(name, text+" (-min-free-disk 0: no check)")
	case free < c.MinFreeDisk:
		return failed(name, fmt.Sprintf("%s, under the %s the server keeps free: it answers 507 to new work", text, files.HumanBytes(c.MinFreeDisk)), fix)
	case free < 2*c.MinFreeDisk:
		return warned(name, fmt.Sprintf("%s, close to the %s the server keeps free", text, files.HumanBytes(c.MinFreeDisk)), fix)
	}
	return passed(name, fmt.Sprintf("%s (the server keeps %s free)", text, files.HumanBytes(c.MinFreeDisk)))
}

// checkListen binds -listen as serve would and says who holds it when
// that fails.
func checkListen(c *Config) finding {
	const name = "listen"
	if err := checkExposure(c.Listen, c.keys()); err != nil {
		return failed(name, err.Error(), "-listen 127.0.0.1:8080, or set -keys")
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err == nil {
		ln.Close()
		return passed(name, c.Listen+" is free to bind")
	}
	host, port, _ := net.SplitHostPort(c.Listen)
	alt := freePort(host)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		who := "another program"
		if p, ok := portHolder(port); ok {
			who = p.String()
			if p.comm == "falocal" {
				return warned(name, c.Listen+" is in use by "+who+": a falocal server already runs there",
					"stop that server first, or serve another address: -listen "+alt)
			}
		}
		return failed(name, c.Listen+" is in use by "+who, "-listen "+alt+" (free now), or stop what holds "+c.Listen)
	case errors.Is(err, syscall.EACCES):
		return failed(name, c.Listen+": "+err.Error()+" (ports under 1024 need privileges)", "-listen "+alt)
	}
	return failed(name, c.Listen+": "+err.Error(), "-listen "+alt)
}

// freePort is a free address on host, for a fix to suggest.
func freePort(host string) string {
	if host == "" || net.ParseIP(host) == nil && host != "localhost" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "127.0.0.1:8081"
	}
	defer ln.Close()
	return ln.Addr().String()
}

type portProcess struct {
	pid  int
	comm string
}

func (p portProcess) String() string { return fmt.Sprintf("%s (pid %d)", p.comm, p.pid) }

// portHolder finds the process listening on a TCP port: the socket's inode
// from /proc/net/tcp{,6}, then the process with that socket open. Other
// users' processes cannot be read, so it may find none.
func portHolder(port string) (portProcess, bool) {
	n, err := strconv.Atoi(port)
	if err != nil {
		return portProcess{}, false
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for _, ino := range listeningInodes(f, n) {
			inodes["socket:["+ino+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return portProcess{}, false
	}
	procs, _ := os.ReadDir("/proc")
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", d.Name(), "fd"))
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join("/proc", d.Name(), "fd", fd.Name())); err == nil && inodes[l] {
				comm, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
				return portProcess{pid, strings.TrimSpace(string(comm))}, true
			}
		}
	}
	return portProcess{}, false
}

// listeningInodes reads a /proc/net/tcp table for sockets listening on port.
func listeningInodes(table string, port int) []string {
	f, err := os.Open(table)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
			continue
		}
		_, hexPort, found := strings.Cut(f[1], ":")
		if p, err := strconv.ParseInt(hexPort, 16, 32); found && err == nil && int(p) == port {
			out = append(out, f[9])
		}
	}
	return out
}

// checkQueue reads the queue database as 'falocal queue check' does, or
// reaches the shared one in PostgreSQL.
func checkQueue(c *Config) finding {
	const name = "queue"
	if c.Queue != "" {
		return checkSharedQueue(c)
	}
	path := filepath.Join(c.DataDir, "queue.db")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return passed(name, "no queue database yet at "+path+" (a server creates it when it first starts)")
	}
	rep, err := queue.Check(path)
	switch {
	case errors.Is(err, queue.ErrInUse):
		return passed(name, path+" is in use by a running server (stop it to check the file; 'falocal queue backup' copies it meanwhile)")
	case err != nil:
		return failed(name, err.Error(), "falocal queue check -data-dir "+c.DataDir+" shows the details")
	case rep.Damaged():
		return failed(name, fmt.Sprintf("%s is damaged: %d request(s) readable, %d not", path, rep.Records, rep.Unreadable),
			"falocal queue repair -data-dir "+c.DataDir+" (with the server stopped)")
	}
	return passed(name, fmt.Sprintf("%s is sound: %d request(s)", path, rep.Records))
}

// checkSharedQueue connects to the -queue database as a server would.
func checkSharedQueue(c *Config) finding {
	const name = "queue"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := pgqueue.Probe(ctx, c.Queue)
	switch {
	case err != nil:
		return failed(name, "the shared queue (-queue) cannot be used: "+err.Error(),
			"check that PostgreSQL runs and accepts this server's connections, and the -queue URL's host, port, user, password and database")
	case p.Schema == 0:
		return passed(name, "the shared queue's database is reachable and empty (the first server to start creates its tables)")
	case p.Schema < p.Want:
		return passed(name, fmt.Sprintf("the shared queue's database is reachable, schema version %d (this program migrates it to %d at start); %d queued, %d running",
			p.Schema, p.Want, p.Queued, p.Running))
	}
	return passed(name, fmt.Sprintf("the shared queue's database is reachable: %d queued, %d running, %d server(s) alive", p.Queued, p.Running, p.Nodes))
}
