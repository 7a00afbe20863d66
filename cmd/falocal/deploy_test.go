package main

// Checks of the deployment files that need no Docker and no systemd
// manager: the CPU Dockerfile's structure and pins, its entrypoint run for
// real, the systemd unit through systemd-analyze, and the config files
// they ship through the config parser.

import (
	"bytes"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
)

const repoRoot = "../.."

// dockerInstr is one Dockerfile instruction, continuation lines joined.
type dockerInstr struct {
	cmd, args string
	line      int
}

func parseDockerfile(t *testing.T, path string) []dockerInstr {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []dockerInstr
	var cur strings.Builder
	start := 0
	for i, l := range strings.Split(string(data), "\n") {
		if t := strings.TrimSpace(l); cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if s, ok := strings.CutSuffix(strings.TrimRight(l, " "), `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, dockerInstr{strings.ToUpper(cmd), strings.TrimSpace(args), start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: a continued line at the end", path)
	}
	return out
}

// TestDockerfileCPU checks the CPU Dockerfile: known instructions, stages
// copied from defined before use, copied paths present and not excluded
// from the build context, the entrypoint the one copied, a non-root user,
// a /healthz check, a volume, and pins equal to go.mod's and setup's.
func TestDockerfileCPU(t *testing.T) {
	ins := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
	known := map[string]bool{"FROM": true, "ARG": true, "RUN": true, "ENV": true, "WORKDIR": true, "COPY": true, "USER": true,
		"VOLUME": true, "EXPOSE": true, "HEALTHCHECK": true, "ENTRYPOINT": true, "CMD": true, "STOPSIGNAL": true}
	ignored, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string]bool{}
	args := map[string]string{}
	copied := map[string]string{} // destination: source, from the build context
	has := map[string]string{}
	for _, in := range ins {
		if !known[in.cmd] {
			t.Errorf("Dockerfile:%d: unknown instruction %s", in.line, in.cmd)
		}
		has[in.cmd] = in.args
		switch in.cmd {
		case "FROM":
			f := strings.Fields(in.args)
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stages[f[2]] = true
			}
		case "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			args[k] = v
		case "COPY":
			f := strings.Fields(in.args)
			if strings.HasPrefix(f[0], "--from=") {
				if from := strings.TrimPrefix(f[0], "--from="); !stages[from] {
					t.Errorf("Dockerfile:%d: COPY from stage %q, not defined before", in.line, from)
				}
				continue
			}
			for _, src := range f[:len(f)-1] {
				if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil && src != "." {
					t.Errorf("Dockerfile:%d: COPY %s: %v", in.line, src, err)
				}
				for _, pat := range strings.Split(string(ignored), "\n") {
					if pat = strings.TrimSpace(pat); pat != "" && !strings.HasPrefix(pat, "#") && (pat == src || strings.HasPrefix(src, pat+"/")) {
						t.Errorf("Dockerfile:%d: COPY %s, which .dockerignore leaves out of the build context", in.line, src)
					}
				}
				copied[f[len(f)-1]] = src
			}
		}
	}
	if u := has["USER"]; u == "" || u == "root" || u == "0" {
		t.Errorf("USER %q: the image must not run as root", u)
	}
	if !strings.Contains(has["HEALTHCHECK"], "/healthz") {
		t.Errorf("HEALTHCHECK %q does not ask /healthz", has["HEALTHCHECK"])
	}
	if has["VOLUME"] == "" {
		t.Error("no VOLUME for the data")
	}
	ep := regexp.MustCompile(`^\["([^"]+)"`).FindStringSubmatch(has["ENTRYPOINT"])
	if ep == nil || copied[ep[1]] != "deploy/docker-entrypoint.sh" {
		t.Errorf("ENTRYPOINT %s is not the copied deploy/docker-entrypoint.sh (%v)", has["ENTRYPOINT"], copied)
	}
	gomod, _ := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if want := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(gomod); want == nil || args["GO_VERSION"] != string(want[1]) {
		t.Errorf("ARG GO_VERSION=%s, go.mod says %s", args["GO_VERSION"], want)
	}
	for arg, want := range map[string]string{"ORT_VERSION": ortVersion, "ORT_PACKAGE_SHA256": ortPackage.SHA256, "ORT_LIBRARY_SHA256": ortSHA256} {
		if args[arg] != want {
			t.Errorf("ARG %s=%s, setup pins %s", arg, args[arg], want)
		}
	}
}

// TestDockerEntrypoint runs the image's entrypoint with the real binary:
// a mounted bundle is installed once (a restart does not install it
// again), a damaged one stops the start, and with none it runs the
// command as given.
func TestDockerEntrypoint(t *testing.T) {
	script, err := filepath.Abs(filepath.Join(repoRoot, "deploy", "docker-entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	bin := testenv.Binary(t)
	work := t.TempDir()
	key := filepath.Join(work, "site")
	if _, e, code := runCmd(t, "bundle", "keygen", "-o", key); code != 0 {
		t.Fatal(e)
	}
	bundle := filepath.Join(work, "site.falb")
	if _, e, code := runCmd(t, "bundle", "create", "-o", bundle, "-sign", key, "-data-dir", smallStore(t)); code != 0 {
		t.Fatal(e)
	}
	data, cache := t.TempDir(), t.TempDir()
	entry := func(bundle string, args ...string) (string, error) {
		cmd := exec.Command("bash", append([]string{script}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"),
			"FALOCAL_BUNDLE="+bundle, "FALOCAL_BUNDLE_TRUST="+key+".pub", "FALOCAL_DATA_DIR="+data, "FALOCAL_CACHE_DIR="+cache)
		if filepath.Base(bin) != "falocal" {
			t.Fatalf("the entrypoint runs 'falocal' from PATH; the binary is %s", bin)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// serve with a missing runtime library fails at once, after the install.
	noORT := filepath.Join(work, "no-ort.so")
	out, err := entry(bundle, "serve", "-ort-library", noORT)
	if !strings.Contains(out, "installing "+bundle) || !strings.Contains(out, noORT+" not found") || err == nil {
		t.Fatalf("first start: %v\n%s", err, out)
	}
	if got := storeNames(t, data); strings.Join(got, ",") != "seg-a,up-b,up-c" {
		t.Errorf("installed %v", got)
	}
	if out, _ = entry(bundle, "serve", "-ort-library", noORT); strings.Contains(out, "installing") || !strings.Contains(out, noORT+" not found") {
		t.Errorf("second start installed the bundle again:\n%s", out)
	}
	// Another command runs as given, without installing.
	if out, err = entry(bundle, "version"); err != nil || !strings.HasPrefix(out, "falocal ") || strings.Contains(out, "installing") {
		t.Errorf("version: %v\n%s", err, out)
	}
	// A damaged bundle stops the start before serving.
	bad := filepath.Join(work, "bad.falb")
	b, _ := os.ReadFile(bundle)
	os.WriteFile(bad, b[:len(b)/2], 0o644)
	if out, err = entry(bad, "serve", "-ort-library", noORT); err == nil || strings.Contains(out, noORT+" not found") || !strings.Contains(out, "bad.falb") {
		t.Errorf("damaged bundle: %v\n%s", err, out)
	}
}

// TestSystemdUnit verifies deploy/falocal.service with systemd-analyze
// (its ExecStart pointed at the binary under test, which must exist), and
// checks the stop timeout covers the drain it waits for.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "falocal.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=falocal", "CacheDirectory=falocal",
		"NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes", "RestrictAddressFamilies=", "KillSignal=SIGTERM",
		"ExecStart=/usr/local/bin/falocal serve -config /etc/falocal/falocal.toml\n"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\S+)`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("no TimeoutStopSec")
	}
	stop, err := time.ParseDuration(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := parse("serve", []string{"-config", filepath.Join(repoRoot, "deploy", "falocal.toml")}, io.Discard, nil)
	if err != nil {
		t.Fatalf("deploy/falocal.toml: %v", err)
	}
	if stop < c.DrainTimeout+5*time.Second {
		t.Errorf("TimeoutStopSec=%v leaves no margin over the %v drain", stop, c.DrainTimeout)
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatal("systemd-analyze is not installed (apt-get install -y systemd)")
		}
		t.Skip("systemd-analyze is not installed: the unit is not verified")
	}
	bin, err := filepath.Abs(testenv.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "falocal.service")
	os.WriteFile(p, bytes.ReplaceAll(unit, []byte("ExecStart=/usr/local/bin/falocal "), []byte("ExecStart="+bin+" ")), 0o644)
	cmd := exec.Command(sa, "verify", p)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_TARGET=console")
	// verify warns about unknown keys and bad values but exits 0: any
	// output is a failure.
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestDeployConfigs checks the config files the image and the unit ship
// parse and validate.
func TestDeployConfigs(t *testing.T) {
	for _, f := range []string{"docker.toml", "falocal.toml"} {
		if _, _, err := parse("serve", []string{"-config", filepath.Join(repoRoot, "deploy", f)}, io.Discard, func(*flag.FlagSet) {}); err != nil {
			t.Errorf("deploy/%s: %v", f, err)
		}
	}
}
