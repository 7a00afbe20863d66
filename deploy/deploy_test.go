package deploy

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/falocal/falocal/api/files"
)

const configGo = "../cmd/falocal/config.go"

// Flags and variables of the fleet being added to the server; allowed here
// whether or not config.go has them yet.
var (
	fleetFlags = []string{"role", "queue", "node", "webhook-key"}
	fleetEnvs  = []string{"FALOCAL_QUEUE", "FALOCAL_ROLE", "FALOCAL_NODE", "FALOCAL_WEBHOOK_KEY"}
)

// Variables falocal reads that are not its own (the S3 credentials).
var foreignEnvs = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}

var (
	// str(&c.Listen, "listen", "FALOCAL_LISTEN", …) and its kin.
	boundFlag = regexp.MustCompile(`\b(str|num|integer|boolean|dur)\(&c\.\w+, "([a-z][a-z0-9-]*)", "FALOCAL_`)
	// fs.StringVar(&c.ConfigFile, "config", …), fs.Var(preloadFlag{…}, "preload", …).
	fsFlag   = regexp.MustCompile(`\bfs\.(\w+)\([^"\n]*?, "([a-z][a-z0-9-]*)",`)
	envName  = regexp.MustCompile(`"(FALOCAL_[A-Z0-9_]+)"`)
	varRef   = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	docSplit = regexp.MustCompile(`(?m)^---[ \t]*$`)
)

// serverConfig is what config.go registers: flag names (true for boolean
// ones, which take no separate value) and environment variables.
type serverConfig struct {
	flags map[string]bool
	envs  map[string]bool
}

func loadServerConfig(t *testing.T) serverConfig {
	t.Helper()
	b, err := os.ReadFile(configGo)
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	c := serverConfig{flags: map[string]bool{}, envs: map[string]bool{}}
	for _, m := range boundFlag.FindAllStringSubmatch(src, -1) {
		c.flags[m[2]] = m[1] == "boolean"
	}
	for _, m := range fsFlag.FindAllStringSubmatch(src, -1) {
		// -preload alone is allowed too (preloadFlag.IsBoolFlag).
		c.flags[m[2]] = m[1] == "BoolVar" || m[2] == "preload"
	}
	for _, m := range envName.FindAllStringSubmatch(src, -1) {
		c.envs[m[1]] = true
	}
	// The patterns must still see config.go's flags: without these, they
	// no longer match and every check below would pass vacuously or fail.
	for _, f := range []string{"listen", "storage", "providers", "drain-timeout", "keys", "config", "preload", "fp16"} {
		if _, ok := c.flags[f]; !ok {
			t.Fatalf("%s: flag -%s not found; the patterns of this test no longer match the file", configGo, f)
		}
	}
	for _, e := range []string{"FALOCAL_LISTEN", "FALOCAL_STORAGE", "FALOCAL_KEYS", "FALOCAL_CONFIG"} {
		if !c.envs[e] {
			t.Fatalf("%s: %s not found; the patterns of this test no longer match the file", configGo, e)
		}
	}
	for _, f := range fleetFlags {
		if _, ok := c.flags[f]; !ok {
			c.flags[f] = false
		}
	}
	for _, e := range fleetEnvs {
		c.envs[e] = true
	}
	return c
}

// parseArgs checks the arguments after "falocal serve" against the
// registered flags and returns each flag's value.
func (c serverConfig) parseArgs(where string, args []string) (map[string]string, []error) {
	vals := map[string]string{}
	var errs []error
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			errs = append(errs, fmt.Errorf("%s: argument %q is no flag (serve takes no positional arguments)", where, a))
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		isBool, ok := c.flags[name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: -%s is not a flag of falocal serve (%s)", where, name, configGo))
			continue
		}
		if !hasVal {
			if isBool {
				val = "true"
			} else if i+1 < len(args) {
				i++
				val = args[i]
			} else {
				errs = append(errs, fmt.Errorf("%s: -%s has no value", where, name))
			}
		}
		vals[name] = val
	}
	return vals, errs
}

// setting is a server setting as the server would see it: the flag's
// value, else the environment's.
func setting(flags, env map[string]string, flag, envVar string) (string, bool) {
	if v, ok := flags[flag]; ok {
		return v, true
	}
	v, ok := env[envVar]
	return v, ok
}

func drainTimeout(t *testing.T, where string, flags, env map[string]string) time.Duration {
	v, ok := setting(flags, env, "drain-timeout", "FALOCAL_DRAIN_TIMEOUT")
	if !ok {
		return 30 * time.Second // config.go's default
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Errorf("%s: drain timeout %q: %v", where, v, err)
	}
	return d
}

// listenPort is the port the server listens on, which must not be loopback
// (probes and Services come from outside the container).
func listenPort(t *testing.T, where string, flags, env map[string]string) int {
	v, ok := setting(flags, env, "listen", "FALOCAL_LISTEN")
	if !ok {
		t.Errorf("%s: no -listen or FALOCAL_LISTEN: the default 127.0.0.1:8080 is unreachable from outside the container", where)
		return 0
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		t.Errorf("%s: listen address %q: %v", where, v, err)
		return 0
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		t.Errorf("%s: listen address %q is loopback", where, v)
	}
	n, _ := strconv.Atoi(port)
	return n
}

// dockerfileFor is the Dockerfile each image is built from, by the tag its
// header documents (docker build … -t TAG).
var dockerfileFor = map[string]string{"falocal:cpu": "Dockerfile", "falocal:cuda": "Dockerfile.cuda"}

func checkImage(t *testing.T, where, image string) {
	df, ok := dockerfileFor[image]
	if !ok {
		t.Errorf("%s: image %q is none of the images the repository builds (%v)", where, image, dockerfileFor)
		return
	}
	b, err := os.ReadFile(filepath.Join("..", df))
	if err != nil {
		t.Errorf("%s: image %s: %v", where, image, err)
		return
	}
	if !strings.Contains(string(b), "-t "+image) {
		t.Errorf("%s: %s does not document building %s (docker build … -t %s)", where, df, image, image)
	}
}

// ---- Kubernetes

type k8sObject struct {
	where string // file: Kind/name
	kind  string
	meta  *metav1.ObjectMeta
	obj   any
}

// newObject is the Go type of each kind the manifests may hold; any other
// is an error.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		return &corev1.Namespace{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "networking.k8s.io/v1 Ingress":
		return &networkingv1.Ingress{}, nil
	}
	return nil, fmt.Errorf("unknown apiVersion %q kind %q", apiVersion, kind)
}

func objectMeta(o any) *metav1.ObjectMeta {
	switch o := o.(type) {
	case *corev1.Namespace:
		return &o.ObjectMeta
	case *corev1.Secret:
		return &o.ObjectMeta
	case *corev1.ConfigMap:
		return &o.ObjectMeta
	case *corev1.Service:
		return &o.ObjectMeta
	case *corev1.PersistentVolumeClaim:
		return &o.ObjectMeta
	case *appsv1.Deployment:
		return &o.ObjectMeta
	case *appsv1.StatefulSet:
		return &o.ObjectMeta
	case *policyv1.PodDisruptionBudget:
		return &o.ObjectMeta
	case *networkingv1.Ingress:
		return &o.ObjectMeta
	}
	panic(fmt.Sprintf("no metadata for %T", o))
}

// loadManifests decodes every YAML document under kubernetes/ strictly:
// unknown fields, duplicate keys and unknown kinds fail.
func loadManifests(t *testing.T) []k8sObject {
	t.Helper()
	paths, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in kubernetes/: %v", err)
	}
	if more, _ := filepath.Glob("kubernetes/*.yml"); len(more) > 0 {
		t.Errorf("%v: name manifests *.yaml, as kustomization.yaml lists them", more)
	}
	var objs []k8sObject
	var listed []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(p) == "kustomization.yaml" {
			listed = checkKustomization(t, p, b)
			continue
		}
		for i, doc := range docSplit.Split(string(b), -1) {
			where := fmt.Sprintf("%s#%d", p, i+1)
			j, err := yaml.YAMLToJSONStrict([]byte(doc))
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if string(j) == "null" { // comments only
				continue
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			obj, err := newObject(tm.APIVersion, tm.Kind)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Errorf("%s: %s: %v", where, tm.Kind, err)
				continue
			}
			m := objectMeta(obj)
			objs = append(objs, k8sObject{where: fmt.Sprintf("%s: %s/%s", filepath.Base(p), tm.Kind, m.Name), kind: tm.Kind, meta: m, obj: obj})
		}
	}
	var files []string
	for _, p := range paths {
		if b := filepath.Base(p); b != "kustomization.yaml" {
			files = append(files, b)
		}
	}
	sort.Strings(listed)
	if listed != nil && !slices.Equal(listed, files) {
		t.Errorf("kustomization.yaml lists %v, the directory holds %v", listed, files)
	}
	return objs
}

func checkKustomization(t *testing.T, path string, b []byte) []string {
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Namespace  string   `json:"namespace"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Errorf("%s: %v (this test knows apiVersion, kind, namespace and resources)", path, err)
		return nil
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s: apiVersion %q kind %q, want kustomize.config.k8s.io/v1beta1 Kustomization", path, k.APIVersion, k.Kind)
	}
	if k.Namespace != "falocal" {
		t.Errorf("%s: namespace %q, want falocal", path, k.Namespace)
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(filepath.Join(filepath.Dir(path), r)); err != nil {
			t.Errorf("%s: resource %v", path, err)
		}
	}
	return slices.Clone(k.Resources)
}

// workload is a Deployment's or StatefulSet's pod template, with what the
// checks need of its owner.
type workload struct {
	where     string
	selector  *metav1.LabelSelector
	template  *corev1.PodTemplateSpec
	claims    []corev1.PersistentVolumeClaim // a StatefulSet's volumeClaimTemplates
	component string
}

// cluster indexes the objects by kind and name (one namespace).
type cluster struct {
	secrets    map[string]*corev1.Secret
	configMaps map[string]*corev1.ConfigMap
	services   map[string]*corev1.Service
	pvcs       map[string]bool
	workloads  []workload
}

func index(t *testing.T, objs []k8sObject) cluster {
	c := cluster{secrets: map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{},
		services: map[string]*corev1.Service{}, pvcs: map[string]bool{}}
	seen := map[string]bool{}
	hasNamespace := false
	for _, o := range objs {
		if seen[o.kind+"/"+o.meta.Name] {
			t.Errorf("%s: defined twice", o.where)
		}
		seen[o.kind+"/"+o.meta.Name] = true
		if o.kind == "Namespace" {
			hasNamespace = hasNamespace || o.meta.Name == "falocal"
		} else if o.meta.Namespace != "falocal" {
			t.Errorf("%s: namespace %q, want falocal (kubectl apply -f without -k puts it elsewhere)", o.where, o.meta.Namespace)
		}
		switch v := o.obj.(type) {
		case *corev1.Secret:
			c.secrets[v.Name] = v
		case *corev1.ConfigMap:
			c.configMaps[v.Name] = v
		case *corev1.Service:
			c.services[v.Name] = v
		case *corev1.PersistentVolumeClaim:
			c.pvcs[v.Name] = true
		case *appsv1.Deployment:
			c.workloads = append(c.workloads, workload{where: o.where, selector: v.Spec.Selector, template: &v.Spec.Template,
				component: v.Spec.Template.Labels["app.kubernetes.io/component"]})
		case *appsv1.StatefulSet:
			c.workloads = append(c.workloads, workload{where: o.where, selector: v.Spec.Selector, template: &v.Spec.Template,
				claims: v.Spec.VolumeClaimTemplates, component: v.Spec.Template.Labels["app.kubernetes.io/component"]})
			if s, ok := c.services[v.Spec.ServiceName]; ok && s.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("%s: serviceName %s is not headless", o.where, v.Spec.ServiceName)
			}
		}
	}
	if !hasNamespace {
		t.Error("no Namespace falocal in the manifests")
	}
	// StatefulSets' governing Services, once all Services are known.
	for _, o := range objs {
		if s, ok := o.obj.(*appsv1.StatefulSet); ok {
			if _, ok := c.services[s.Spec.ServiceName]; !ok {
				t.Errorf("%s: serviceName %q is no Service in the manifests", o.where, s.Spec.ServiceName)
			}
		}
	}
	return c
}

func (c cluster) secretHas(name, key string) bool {
	s, ok := c.secrets[name]
	if !ok {
		return false
	}
	_, inData := s.Data[key]
	_, inString := s.StringData[key]
	return inData || inString
}

func (c cluster) configMapHas(name, key string) bool {
	m, ok := c.configMaps[name]
	if !ok {
		return false
	}
	_, ok = m.Data[key]
	return ok
}

// containerPort resolves a probe's or Service's port against the
// container's ports: a name or a number; 0 when it names none.
func containerPort(ctr *corev1.Container, p intstr.IntOrString) int32 {
	for _, cp := range ctr.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return cp.ContainerPort
		}
	}
	return 0
}

func hasGPU(r corev1.ResourceRequirements) bool {
	_, l := r.Limits["nvidia.com/gpu"]
	_, q := r.Requests["nvidia.com/gpu"]
	return l || q
}

func isFalocal(image string) bool { return strings.HasPrefix(image, "falocal:") }

func TestKubernetes(t *testing.T) {
	cfg := loadServerConfig(t)
	objs := loadManifests(t)
	c := index(t, objs)

	var workers, apis int
	// What every falocal server must share: the queue, the file store, the
	// webhook key.
	shared := map[string]map[string][]string{"FALOCAL_QUEUE": {}, "FALOCAL_STORAGE": {}, "FALOCAL_WEBHOOK_KEY": {}}
	for _, w := range c.workloads {
		spec := &w.template.Spec
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.template.Labels)) {
			t.Errorf("%s: selector %v does not select its own template's labels %v (%v)", w.where, w.selector, w.template.Labels, err)
		}
		volumes := map[string]*corev1.Volume{}
		for i := range spec.Volumes {
			v := &spec.Volumes[i]
			volumes[v.Name] = v
			if v.Secret != nil {
				if _, ok := c.secrets[v.Secret.SecretName]; !ok {
					t.Errorf("%s: volume %s: Secret %q is not in the manifests", w.where, v.Name, v.Secret.SecretName)
				}
			}
			if v.PersistentVolumeClaim != nil && !c.pvcs[v.PersistentVolumeClaim.ClaimName] {
				t.Errorf("%s: volume %s: PersistentVolumeClaim %q is not in the manifests", w.where, v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
		claims := map[string]bool{}
		for _, cl := range w.claims {
			claims[cl.Name] = true
		}
		grace := int64(30)
		if spec.TerminationGracePeriodSeconds != nil {
			grace = *spec.TerminationGracePeriodSeconds
		}
		for i := range spec.Containers {
			ctr := &spec.Containers[i]
			where := w.where + " container " + ctr.Name
			if ctr.ReadinessProbe == nil {
				t.Errorf("%s: no readinessProbe", where)
			}
			for _, m := range ctr.VolumeMounts {
				if volumes[m.Name] == nil && !claims[m.Name] {
					t.Errorf("%s: volumeMount %s names no volume or volumeClaimTemplate", where, m.Name)
				}
			}
			env := checkEnv(t, where, ctr, c)
			if hasGPU(ctr.Resources) != (w.component == "worker") {
				t.Errorf("%s (component %q): GPU requested: %v; only workers may, and each must", where, w.component, hasGPU(ctr.Resources))
			}
			if !isFalocal(ctr.Image) {
				continue
			}
			checkImage(t, where, ctr.Image)
			if !slices.Equal(ctr.Command, []string{"falocal", "serve"}) {
				t.Errorf("%s: command %q, want [falocal serve] (the images' entrypoints differ)", where, ctr.Command)
			}
			for _, a := range ctr.Args {
				for _, m := range varRef.FindAllStringSubmatch(a, -1) {
					if _, ok := env[m[1]]; !ok {
						t.Errorf("%s: argument %q refers to $(%s), which the container does not define (Kubernetes passes it literally)", where, a, m[1])
					}
				}
			}
			// As the kubelet expands them.
			args := make([]string, len(ctr.Args))
			for i, a := range ctr.Args {
				args[i] = varRef.ReplaceAllStringFunc(a, func(ref string) string { return env[varRef.FindStringSubmatch(ref)[1]] })
			}
			flags, errs := cfg.parseArgs(where, args)
			for _, err := range errs {
				t.Error(err)
			}
			for name := range env {
				if strings.HasPrefix(name, "FALOCAL_") && !cfg.envs[name] {
					t.Errorf("%s: %s is not a variable falocal reads (%s)", where, name, configGo)
				}
			}
			role, _ := setting(flags, env, "role", "FALOCAL_ROLE")
			if role != w.component {
				t.Errorf("%s: role %q, but the workload's component label is %q", where, role, w.component)
			}
			switch role {
			case "worker":
				workers++
				if ctr.Image != "falocal:cuda" {
					t.Errorf("%s: a worker runs the CUDA image (falocal:cuda), not %s", where, ctr.Image)
				}
				if p, _ := setting(flags, env, "providers", "FALOCAL_PROVIDERS"); !slices.Contains(strings.Split(p, ","), "cuda") {
					t.Errorf("%s: providers %q without cuda", where, p)
				}
				if q := ctr.Resources.Limits["nvidia.com/gpu"]; q.Value() != 1 {
					t.Errorf("%s: limits nvidia.com/gpu %s, want 1 (one GPU per worker)", where, q.String())
				}
			case "api":
				apis++
			default:
				t.Errorf("%s: role %q: in a fleet every server is api or worker", where, role)
			}
			port := listenPort(t, where, flags, env)
			for name, p := range map[string]*corev1.Probe{"readinessProbe": ctr.ReadinessProbe, "livenessProbe": ctr.LivenessProbe} {
				want := map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"}[name]
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want {
					t.Errorf("%s: %s is not GET %s", where, name, want)
					continue
				}
				if got := containerPort(ctr, p.HTTPGet.Port); got == 0 || int(got) != port {
					t.Errorf("%s: %s port %s is container port %d, the server listens on %d", where, name, p.HTTPGet.Port.String(), got, port)
				}
			}
			sleep := int64(0)
			if ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil && ctr.Lifecycle.PreStop.Sleep != nil {
				sleep = ctr.Lifecycle.PreStop.Sleep.Seconds
			}
			if d := drainTimeout(t, where, flags, env) + time.Duration(sleep)*time.Second; time.Duration(grace)*time.Second <= d {
				t.Errorf("%s: terminationGracePeriodSeconds %d is not above the drain timeout and preStop pause (%v)", where, grace, d)
			}
			if !slices.ContainsFunc(ctr.Env, func(e corev1.EnvVar) bool {
				return e.Name == "FALOCAL_NODE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
			}) {
				t.Errorf("%s: FALOCAL_NODE is not the pod's name (fieldRef metadata.name)", where)
			}
			for name := range shared {
				v, _ := setting(flags, env, map[string]string{"FALOCAL_QUEUE": "queue", "FALOCAL_STORAGE": "storage", "FALOCAL_WEBHOOK_KEY": "webhook-key"}[name], name)
				shared[name][v] = append(shared[name][v], where)
			}
			checkQueueURL(t, where, env["FALOCAL_QUEUE"], c)
			if s, _ := setting(flags, env, "storage", "FALOCAL_STORAGE"); s == "" {
				t.Errorf("%s: no storage: a fleet's servers must share an S3 bucket", where)
			} else if _, err := files.ParseS3URL(s); err != nil {
				t.Errorf("%s: %v", where, err)
			}
			for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FALOCAL_KEYS"} {
				if _, ok := env[k]; !ok {
					t.Errorf("%s: no %s", where, k)
				}
			}
			checkWebhookKey(t, where, env["FALOCAL_WEBHOOK_KEY"], ctr, volumes, c)
		}
	}
	if workers == 0 || apis == 0 {
		t.Errorf("%d worker and %d api containers; want both kinds", workers, apis)
	}
	for name, vals := range shared {
		if len(vals) != 1 {
			t.Errorf("%s differs between servers (all must share it): %v", name, vals)
		}
		for v := range vals {
			if v == "" {
				t.Errorf("%s is unset in %v", name, vals[v])
			}
		}
	}

	for _, o := range objs {
		switch v := o.obj.(type) {
		case *corev1.Service:
			checkService(t, o.where, v, c)
		case *policyv1.PodDisruptionBudget:
			if !selectsSome(v.Spec.Selector, c) {
				t.Errorf("%s: selector %v matches no workload's template", o.where, v.Spec.Selector)
			}
		}
	}
}

func selectsSome(s *metav1.LabelSelector, c cluster) bool {
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil || sel.Empty() {
		return false
	}
	for _, w := range c.workloads {
		if sel.Matches(labels.Set(w.template.Labels)) {
			return true
		}
	}
	return false
}

// checkEnv checks where each variable's value comes from and returns the
// container's environment: literal values as written, the rest as the
// names of their sources.
func checkEnv(t *testing.T, where string, ctr *corev1.Container, c cluster) map[string]string {
	env := map[string]string{}
	for _, from := range ctr.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			m, ok := c.configMaps[from.ConfigMapRef.Name]
			if !ok {
				t.Errorf("%s: envFrom ConfigMap %q is not in the manifests", where, from.ConfigMapRef.Name)
				continue
			}
			for k, v := range m.Data {
				env[k] = v
			}
		case from.SecretRef != nil:
			s, ok := c.secrets[from.SecretRef.Name]
			if !ok {
				t.Errorf("%s: envFrom Secret %q is not in the manifests", where, from.SecretRef.Name)
				continue
			}
			for k := range s.StringData {
				env[k] = "secret " + s.Name
			}
			for k := range s.Data {
				env[k] = "secret " + s.Name
			}
		}
	}
	referenced := map[string]bool{}
	for _, e := range ctr.Env {
		for _, m := range varRef.FindAllStringSubmatch(e.Value, -1) {
			if _, ok := env[m[1]]; !ok {
				t.Errorf("%s: %s refers to $(%s), not defined before it (Kubernetes passes it literally)", where, e.Name, m[1])
			}
			referenced[m[1]] = true
		}
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			if !c.secretHas(r.Name, r.Key) {
				t.Errorf("%s: %s: Secret %s key %s is not in the manifests", where, e.Name, r.Name, r.Key)
			}
			env[e.Name] = "secret " + r.Name
		case e.ValueFrom.ConfigMapKeyRef != nil:
			r := e.ValueFrom.ConfigMapKeyRef
			if !c.configMapHas(r.Name, r.Key) {
				t.Errorf("%s: %s: ConfigMap %s key %s is not in the manifests", where, e.Name, r.Name, r.Key)
			}
			env[e.Name] = c.configMaps[r.Name].Data[r.Key]
		default:
			env[e.Name] = "field"
		}
	}
	if !isFalocal(ctr.Image) {
		return env
	}
	// Every name is one falocal reads, or a part of another's value.
	for name := range env {
		if !strings.HasPrefix(name, "FALOCAL_") && !slices.Contains(foreignEnvs, name) && !referenced[name] {
			t.Errorf("%s: %s is neither read by falocal nor used in another variable", where, name)
		}
	}
	return env
}

// checkQueueURL checks that the queue is the PostgreSQL of the manifests:
// its Service and port, user and database.
func checkQueueURL(t *testing.T, where, raw string, c cluster) {
	u, err := url.Parse(varRef.ReplaceAllString(raw, "x"))
	if err != nil || u.Scheme != "postgres" && u.Scheme != "postgresql" {
		t.Errorf("%s: queue %q is no postgres:// URL (%v)", where, raw, err)
		return
	}
	svc, ok := c.services[u.Hostname()]
	if !ok {
		t.Errorf("%s: queue host %q is no Service in the manifests", where, u.Hostname())
		return
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == u.Port() }) {
		t.Errorf("%s: queue port %q is not a port of Service %s", where, u.Port(), svc.Name)
	}
	for _, w := range c.workloads {
		sel, _ := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector})
		if !sel.Matches(labels.Set(w.template.Labels)) {
			continue
		}
		for _, ctr := range w.template.Spec.Containers {
			for _, e := range ctr.Env {
				if e.Name == "POSTGRES_USER" && e.Value != u.User.Username() {
					t.Errorf("%s: queue user %q, the database's is %q", where, u.User.Username(), e.Value)
				}
				if e.Name == "POSTGRES_DB" && "/"+e.Value != u.Path {
					t.Errorf("%s: queue database %q, the server's is %q", where, u.Path, e.Value)
				}
			}
		}
	}
}

// checkWebhookKey checks that the key file is a key of a mounted Secret.
func checkWebhookKey(t *testing.T, where, path string, ctr *corev1.Container, volumes map[string]*corev1.Volume, c cluster) {
	for _, m := range ctr.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		v := volumes[m.Name]
		if v == nil || v.Secret == nil {
			t.Errorf("%s: the webhook key %s is on volume %s, not a Secret's", where, path, m.Name)
			return
		}
		if !c.secretHas(v.Secret.SecretName, rel) {
			t.Errorf("%s: Secret %s has no key %s (the webhook key %s)", where, v.Secret.SecretName, rel, path)
		}
		// The servers run as their own user: the file must be readable by
		// the pod's fsGroup.
		if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o040 == 0 {
			t.Errorf("%s: volume %s: defaultMode must let the group (fsGroup) read the key", where, m.Name)
		}
		return
	}
	t.Errorf("%s: the webhook key %q is on no mounted volume", where, path)
}

func checkService(t *testing.T, where string, s *corev1.Service, c cluster) {
	if len(s.Spec.Selector) == 0 {
		t.Errorf("%s: no selector", where)
		return
	}
	sel, _ := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: s.Spec.Selector})
	matched := false
	for _, w := range c.workloads {
		if !sel.Matches(labels.Set(w.template.Labels)) {
			continue
		}
		matched = true
		for _, p := range s.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			if !slices.ContainsFunc(w.template.Spec.Containers, func(ctr corev1.Container) bool { return containerPort(&ctr, target) != 0 }) {
				t.Errorf("%s: port %s: targetPort %s is no container port of %s", where, p.Name, target.String(), w.where)
			}
		}
	}
	if !matched {
		t.Errorf("%s: selector %v matches no Deployment's or StatefulSet's template", where, s.Spec.Selector)
	}
}

// ---- Compose

// The parts of the Compose specification the file uses; anything else in
// it fails the strict decoding, so that this test sees all it holds.
type composeFile struct {
	Name        string                    `json:"name"`
	XFalocalEnv map[string]string         `json:"x-falocal-env"`
	Services    map[string]composeService `json:"services"`
	Volumes     map[string]*struct{}      `json:"volumes"`
}

type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
	} `json:"build"`
	Restart         string            `json:"restart"`
	Entrypoint      []string          `json:"entrypoint"`
	Command         []string          `json:"command"`
	Environment     map[string]string `json:"environment"`
	Ports           []string          `json:"ports"`
	Volumes         []string          `json:"volumes"`
	StopGracePeriod string            `json:"stop_grace_period"`
	Deploy          *struct {
		Resources struct {
			Reservations struct {
				Devices []struct {
					Driver       string   `json:"driver"`
					DeviceIDs    []string `json:"device_ids"`
					Capabilities []string `json:"capabilities"`
				} `json:"devices"`
			} `json:"reservations"`
		} `json:"resources"`
	} `json:"deploy"`
	Healthcheck *struct {
		Test        []string `json:"test"`
		Interval    string   `json:"interval"`
		Timeout     string   `json:"timeout"`
		Retries     int      `json:"retries"`
		StartPeriod string   `json:"start_period"`
	} `json:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
}

// interpolation is Compose's ${VAR…}; the file's must all be required
// (${VAR:?…}), so that a missing secret stops compose instead of
// becoming an empty password.
var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}`)

func TestCompose(t *testing.T) {
	cfg := loadServerConfig(t)
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range interpolation.FindAllStringSubmatch(string(b), -1) {
		if !strings.HasPrefix(m[2], ":?") {
			t.Errorf("compose.yaml: %s: want ${%s:?message}, required", m[0], m[1])
		}
	}
	var f composeFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	subst := func(s string) string { return interpolation.ReplaceAllString(s, "x") }

	var gpus []string
	var workers, apis int
	shared := map[string]map[string][]string{"FALOCAL_QUEUE": {}, "FALOCAL_STORAGE": {}, "FALOCAL_WEBHOOK_KEY": {}}
	own := map[string]map[string][]string{"FALOCAL_DATA_DIR": {}, "FALOCAL_NODE": {}}
	for name, s := range f.Services {
		where := "compose.yaml: " + name
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 || s.Healthcheck.Test[0] != "CMD" && s.Healthcheck.Test[0] != "CMD-SHELL" {
			t.Errorf("%s: no healthcheck", where)
		}
		for dep, d := range s.DependsOn {
			if t2, ok := f.Services[dep]; !ok {
				t.Errorf("%s: depends on %s, no service", where, dep)
			} else if d.Condition != "service_healthy" || t2.Healthcheck == nil {
				t.Errorf("%s: depends on %s with condition %q, want service_healthy", where, dep, d.Condition)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if _, ok := f.Volumes[src]; !ok {
				t.Errorf("%s: volume %q is not declared", where, src)
			}
		}
		var devices []string
		if s.Deploy != nil {
			for _, d := range s.Deploy.Resources.Reservations.Devices {
				if d.Driver != "nvidia" || !slices.Contains(d.Capabilities, "gpu") {
					t.Errorf("%s: device reservation %+v, want driver nvidia with capability gpu", where, d)
				}
				devices = append(devices, d.DeviceIDs...)
			}
		}
		if s.Build != nil {
			ctx := filepath.Join(".", s.Build.Context)
			df := s.Build.Dockerfile
			if df == "" {
				df = "Dockerfile"
			}
			if _, err := os.Stat(filepath.Join(ctx, df)); err != nil {
				t.Errorf("%s: build: %v", where, err)
			}
			if want := dockerfileFor[s.Image]; filepath.Clean(filepath.Join(ctx, df)) != filepath.Join("..", want) {
				t.Errorf("%s: image %s built from %s, want ../%s", where, s.Image, filepath.Join(ctx, df), want)
			}
		}
		if !isFalocal(s.Image) {
			if len(devices) > 0 {
				t.Errorf("%s: reserves GPUs %v", where, devices)
			}
			continue
		}
		checkImage(t, where, s.Image)
		if s.Build == nil {
			t.Errorf("%s: no build: compose up would try to pull %s", where, s.Image)
		}
		if !slices.Equal(s.Entrypoint, []string{"falocal", "serve"}) {
			t.Errorf("%s: entrypoint %q, want [falocal serve] (the images' entrypoints differ)", where, s.Entrypoint)
		}
		flags, errs := cfg.parseArgs(where, s.Command)
		for _, err := range errs {
			t.Error(err)
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			env[k] = subst(v)
			if strings.HasPrefix(k, "FALOCAL_") && !cfg.envs[k] || !strings.HasPrefix(k, "FALOCAL_") && !slices.Contains(foreignEnvs, k) {
				t.Errorf("%s: %s is not a variable falocal reads (%s)", where, k, configGo)
			}
		}
		for k, set := range own {
			set[env[k]] = append(set[env[k]], name)
		}
		for k, set := range shared {
			set[env[k]] = append(set[env[k]], name)
		}
		role, _ := setting(flags, env, "role", "FALOCAL_ROLE")
		switch role {
		case "worker":
			workers++
			if len(devices) != 1 {
				t.Errorf("%s: a worker reserves exactly one GPU, not %v", where, devices)
			}
			gpus = append(gpus, devices...)
			if s.Image != "falocal:cuda" {
				t.Errorf("%s: a worker runs the CUDA image (falocal:cuda), not %s", where, s.Image)
			}
			if p, _ := setting(flags, env, "providers", "FALOCAL_PROVIDERS"); !slices.Contains(strings.Split(p, ","), "cuda") {
				t.Errorf("%s: providers %q without cuda", where, p)
			}
		case "api":
			apis++
			if len(devices) > 0 {
				t.Errorf("%s: the API reserves GPUs %v", where, devices)
			}
			if len(s.Ports) == 0 {
				t.Errorf("%s: the API publishes no port", where)
			}
		default:
			t.Errorf("%s: role %q: in a fleet every server is api or worker", where, role)
		}
		port := listenPort(t, where, flags, env)
		for _, p := range s.Ports {
			if _, target, _ := strings.Cut(p, ":"); target != strconv.Itoa(port) {
				t.Errorf("%s: port %q does not publish the listen port %d", where, p, port)
			}
		}
		if s.Healthcheck != nil {
			want := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
			if !slices.Contains(s.Healthcheck.Test, want) {
				t.Errorf("%s: healthcheck %q does not get %s", where, s.Healthcheck.Test, want)
			}
		}
		grace, err := time.ParseDuration(s.StopGracePeriod)
		if d := drainTimeout(t, where, flags, env); err != nil || grace <= d {
			t.Errorf("%s: stop_grace_period %q is not above the drain timeout %v", where, s.StopGracePeriod, d)
		}
		checkComposeQueue(t, where, env["FALOCAL_QUEUE"], f)
		checkComposeStorage(t, where, env["FALOCAL_STORAGE"], f)
		if k := env["FALOCAL_WEBHOOK_KEY"]; !slices.ContainsFunc(s.Volumes, func(v string) bool {
			_, dir, _ := strings.Cut(v, ":")
			return strings.HasPrefix(k, dir+"/")
		}) {
			t.Errorf("%s: the webhook key %q is on no volume: each server would make its own", where, k)
		}
	}
	if workers < 2 || apis != 1 {
		t.Errorf("%d workers and %d APIs; want one API and a worker per GPU, two or more", workers, apis)
	}
	seen := map[string]bool{}
	for _, g := range gpus {
		if seen[g] {
			t.Errorf("GPU %s is reserved by two workers", g)
		}
		seen[g] = true
	}
	for k, set := range shared {
		if len(set) != 1 {
			t.Errorf("%s differs between servers (all must share it): %v", k, set)
		}
	}
	for k, set := range own {
		for v, names := range set {
			if v == "" || len(names) > 1 {
				t.Errorf("%s %q: each server needs its own, %v", k, v, names)
			}
		}
	}
}

func checkComposeQueue(t *testing.T, where, raw string, f composeFile) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "postgres" {
		t.Errorf("%s: queue %q is no postgres:// URL (%v)", where, raw, err)
		return
	}
	db, ok := f.Services[u.Hostname()]
	if !ok || !strings.HasPrefix(db.Image, "postgres:") || u.Port() != "5432" {
		t.Errorf("%s: queue %s:%s is not the postgres service", where, u.Hostname(), u.Port())
		return
	}
	if db.Environment["POSTGRES_USER"] != u.User.Username() || "/"+db.Environment["POSTGRES_DB"] != u.Path {
		t.Errorf("%s: queue user %q database %q, the server's are %q and %q", where, u.User.Username(), u.Path,
			db.Environment["POSTGRES_USER"], db.Environment["POSTGRES_DB"])
	}
}

// checkComposeStorage checks that FALOCAL_STORAGE is the versitygw service
// of the file, on its port, in a bucket its entrypoint makes.
func checkComposeStorage(t *testing.T, where, raw string, f composeFile) {
	c, err := files.ParseS3URL(raw)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	host, port, _ := net.SplitHostPort(c.Endpoint)
	s3, ok := f.Services[host]
	if !ok || !strings.HasPrefix(s3.Image, "versity/versitygw:") {
		t.Errorf("%s: storage endpoint %s is not the versitygw service", where, c.Endpoint)
		return
	}
	cmd := strings.Join(s3.Entrypoint, " ")
	if !strings.Contains(cmd, "--port :"+port+" ") {
		t.Errorf("%s: versitygw does not listen on %s (%s)", where, port, cmd)
	}
	if !strings.Contains(cmd, "mkdir -p /data/"+c.Bucket+" ") || !strings.Contains(cmd, "posix /data") {
		t.Errorf("%s: versitygw's posix root /data has no bucket directory %s (%s)", where, c.Bucket, cmd)
	}
}
