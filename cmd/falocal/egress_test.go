//go:build linux

package main

// The server never reaches the network on its own: not for telemetry, not
// for a name lookup. TestNoEgress runs the real binary in a network and mount
// namespace of its own, with loopback only, a resolver configuration that
// points at a DNS recorder on 127.0.0.1:53, and strace recording every
// connect and send of the server's threads; it loads and runs a model, waits
// past the moment ONNX Runtime's telemetry would start, and allows no DNS
// query and no connection attempt beyond loopback.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/falocal/falocal/internal/testenv"
)

// egressChildEnv marks the test binary re-run inside the namespaces.
const egressChildEnv = "FALOCAL_EGRESS_NAMESPACE"

// egressQuiet is how long the server is watched after its first model run:
// ONNX Runtime 1.30's telemetry starts about a second after the first load.
const egressQuiet = 5 * time.Second

// requireTool returns the path of a program the test needs: a missing one
// fails under FALOCAL_REQUIRE_ASSETS=1 (make test), else skips.
func requireTool(t *testing.T, name, why string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatalf("%s is missing (%s; .ci/run installs it)", name, why)
		}
		t.Skipf("%s not installed (%s)", name, why)
	}
	return p
}

func TestNoEgress(t *testing.T) {
	if os.Getenv(egressChildEnv) == "1" {
		noEgressInNamespace(t)
		return
	}
	if testing.Short() {
		t.Skip("runs a model under strace")
	}
	testenv.ORTLibrary(t)
	testenv.DataDir(t)
	requireTool(t, "strace", "it records the server's connection attempts")
	requireTool(t, "getent", "it checks that the DNS recorder sees a lookup")
	bin := testenv.Binary(t)

	cmd := exec.Command(os.Args[0], "-test.run=^TestNoEgress$", "-test.v", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), egressChildEnv+"=1", "FALOCAL_TEST_BIN="+bin)
	// A PID namespace too: the run is its first process, so whatever it
	// started (strace, the server) ends with it, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		Pdeathsig: syscall.SIGKILL}
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 {
		// Unprivileged: a user namespace of our own makes us root in it.
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatalf("cannot start a process in a new network namespace: %v", err)
		}
		t.Skipf("no network namespaces here: %v", err)
	}
	err := cmd.Wait()
	if err != nil {
		t.Fatalf("in the namespace: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "--- PASS: TestNoEgress") {
		t.Fatalf("the run in the namespace did not pass:\n%s", out.String())
	}
	t.Logf("in the namespace:\n%s", out.String())
}

func noEgressInNamespace(t *testing.T) {
	if err := loopbackUp(); err != nil {
		t.Fatalf("bringing lo up: %v", err)
	}
	isolateResolver(t)
	rec := startDNSRecorder(t)
	strace, _ := exec.LookPath("strace")
	getent, _ := exec.LookPath("getent")

	// The instruments work: a lookup by glibc reaches the recorder and
	// strace's record of it is flagged.
	trace := filepath.Join(t.TempDir(), "getent.trace")
	check := exec.Command(strace, straceArgs(trace, getent, "hosts", "egress-check.example.com")...)
	check.Run() // the lookup fails: there is no such name here
	if n := len(rec.names()); n == 0 {
		t.Fatal("the DNS recorder saw no query from getent: the resolver is not pointed at it")
	}
	if bad := egressAttempts(t, trace); len(bad) == 0 {
		t.Fatal("strace's record of getent's lookup shows no DNS packet: the trace is not read right")
	}
	rec.reset()

	// The server, with nothing in its environment that would turn ONNX
	// Runtime's telemetry off on its behalf.
	lib := testenv.ORTLibrary(t)
	data := testenv.NewDataDir(t)
	addr := "127.0.0.1:8080"
	trace = filepath.Join(t.TempDir(), "server.trace")
	args := []string{"serve", "--listen", addr, "--data-dir", data, "--cache-dir", t.TempDir(), "--ort-library", lib}
	srv := exec.Command(strace, straceArgs(trace, testenv.Binary(t), args...)...)
	srv.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "ORT_") || strings.HasPrefix(kv, "FALOCAL_")
	})
	var log bytes.Buffer
	var logMu sync.Mutex
	srv.Stdout = writerFunc(func(p []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return log.Write(p) })
	srv.Stderr = srv.Stdout
	// Its own process group: strace (-o FILE PROG) ignores SIGINT, so the
	// group's signal reaches the server itself.
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		syscall.Kill(-srv.Process.Pid, syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-srv.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			logMu.Lock()
			t.Logf("server log:\n%s", log.String())
			logMu.Unlock()
		}
	})

	base := "http://" + addr
	waitHealthy(t, base, done)
	var img bytes.Buffer
	png.Encode(&img, checkerboard(96))
	body := mustJSON(map[string]any{"image_url": dataURI("image/png", img.Bytes())})
	resp, err := http.Post(base+"/run/fal-ai/imageutils/rembg", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("rembg: %d %s", resp.StatusCode, out)
	}
	// Watch past the telemetry's start; a query ends the wait at once.
	deadline := time.Now().Add(egressQuiet)
	for time.Now().Before(deadline) && len(rec.names()) == 0 {
		time.Sleep(100 * time.Millisecond)
	}
	stop()

	if names := rec.names(); len(names) > 0 {
		t.Errorf("the server made %d DNS queries: %v", len(names), names)
	}
	for _, a := range egressAttempts(t, trace) {
		t.Errorf("the server tried to reach out: %s", a)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func waitHealthy(t *testing.T, base string, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-exited:
			t.Fatal("the server exited before it became healthy")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not become healthy: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func checkerboard(n int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, n, n))
	for y := range n {
		for x := range n {
			c := color.RGBA{230, 40, 40, 255}
			if (x/8+y/8)%2 == 0 {
				c = color.RGBA{250, 250, 250, 255}
			}
			img.Set(x, y, c)
		}
	}
	return img
}

// straceArgs traces every thread and child of prog for the calls that
// address a peer: connect and the sends that may carry an address.
func straceArgs(out, prog string, args ...string) []string {
	return append([]string{"-f", "-qq", "-s", "64", "-e", "signal=none",
		"-e", "trace=connect,sendto,sendmsg,sendmmsg", "-o", out, prog}, args...)
}

var (
	straceIPv4 = regexp.MustCompile(`sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)`)
	straceIPv6 = regexp.MustCompile(`sa_family=AF_INET6, sin6_port=htons\((\d+)\),[^}]*?inet_pton\(AF_INET6, "([^"]+)"`)
	straceUnix = regexp.MustCompile(`sa_family=AF_UNIX, sun_path=@?"([^"]+)"`)
)

// egressAttempts reads an strace record and returns each call that
// addressed something beyond loopback, any DNS server (port 53, loopback
// included), or a local name service (nscd, systemd-resolved) that would
// look names up on the caller's behalf.
func egressAttempts(t *testing.T, trace string) []string {
	t.Helper()
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatalf("reading strace's record: %v", err)
	}
	return straceEgress(string(b))
}

func straceEgress(trace string) []string {
	var bad []string
	for line := range strings.Lines(trace) {
		line = strings.TrimSpace(line)
		for _, m := range straceIPv4.FindAllStringSubmatch(line, -1) {
			if egressAddr(m[2], m[1]) {
				bad = append(bad, line)
			}
		}
		for _, m := range straceIPv6.FindAllStringSubmatch(line, -1) {
			if egressAddr(m[2], m[1]) {
				bad = append(bad, line)
			}
		}
		for _, m := range straceUnix.FindAllStringSubmatch(line, -1) {
			if strings.Contains(m[1], "nscd") || strings.Contains(m[1], "resolve") {
				bad = append(bad, line)
			}
		}
	}
	return bad
}

func egressAddr(host, port string) bool {
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback() || port == "53"
}

func TestStraceEgress(t *testing.T) {
	trace := `2759  connect(12, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}, 16) = 0
2760  connect(16, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0
2760  sendto(16, "\277\256\1\0\0\1\0\0\0\0\0\0\6mobile\6events\4data\t"..., 50, MSG_NOSIGNAL, NULL, 0) = 50
2761  sendto(5, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("127.0.0.1")}, 16) = 1
2762  connect(7, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1 ENETUNREACH (Network is unreachable)
2762  connect(7, {sa_family=AF_INET6, sin6_port=htons(8080), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0
2763  connect(9, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT (No such file or directory)
2763  connect(9, {sa_family=AF_UNIX, sun_path="/tmp/x.sock"}, 110) = 0
2764  sendto(3, [{nlmsg_len=20, nlmsg_type=RTM_GETADDR, nlmsg_flags=NLM_F_REQUEST|NLM_F_DUMP, nlmsg_seq=1, nlmsg_pid=0}, {ifa_family=AF_UNSPEC}], 20, 0, {sa_family=AF_NETLINK, nl_pid=0, nl_groups=00000000}, 12) = 20
2765  sendmsg(4, {msg_name={sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("192.0.2.7")}, msg_namelen=16}, 0) = -1 ENETUNREACH (Network is unreachable)
`
	got := straceEgress(trace)
	want := []string{"10.255.255.53", `inet_addr("127.0.0.1")}, 16) = 1`, "2001:db8::1", "nscd", "192.0.2.7"}
	if len(got) != len(want) {
		t.Fatalf("flagged %d calls, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Errorf("call %d: %s, want one with %s", i, got[i], w)
		}
	}
}

// loopbackUp sets IFF_UP on lo (a new network namespace starts with it
// down), as `ip link set lo up` does.
func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var ifr [40]byte // struct ifreq: the name, then a union whose first field is the flags
	copy(ifr[:], "lo")
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return e
	}
	flags := binary.NativeEndian.Uint16(ifr[16:]) | syscall.IFF_UP
	binary.NativeEndian.PutUint16(ifr[16:], flags)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return e
	}
	return nil
}

// isolateResolver makes this process's mount namespace private and points
// every name lookup in it at 127.0.0.1:53: /etc/resolv.conf names only that
// server, /etc/nsswitch.conf looks hosts up in files and DNS alone, and no
// nscd socket is reachable.
func isolateResolver(t *testing.T) {
	if err := syscall.Mount("none", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		t.Fatalf("making mounts private: %v", err)
	}
	dir := t.TempDir()
	over := func(target string, content string) {
		if _, err := os.Stat(target); err != nil {
			return // absent: glibc and Go fall back to 127.0.0.1:53 and files+dns
		}
		src := filepath.Join(dir, filepath.Base(target))
		if content == "" {
			if err := os.Mkdir(src, 0o755); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount(src, target, "", syscall.MS_BIND, ""); err != nil {
			t.Fatalf("bind-mounting over %s: %v", target, err)
		}
	}
	over("/etc/resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
	over("/etc/nsswitch.conf", "hosts: files dns\n")
	over("/run/nscd", "")
	over("/var/run/nscd", "")
}

// dnsRecorder answers every query NXDOMAIN and remembers its name.
type dnsRecorder struct {
	udp net.PacketConn
	tcp net.Listener
	wg  sync.WaitGroup

	mu    sync.Mutex
	seen  []string
	conns map[net.Conn]struct{}
}

func startDNSRecorder(t *testing.T) *dnsRecorder {
	t.Helper()
	r := &dnsRecorder{conns: map[net.Conn]struct{}{}}
	var err error
	if r.udp, err = net.ListenPacket("udp", "127.0.0.1:53"); err != nil {
		t.Fatal(err)
	}
	if r.tcp, err = net.Listen("tcp", "127.0.0.1:53"); err != nil {
		r.udp.Close()
		t.Fatal(err)
	}
	r.wg.Add(2)
	go r.serveUDP()
	go r.serveTCP()
	t.Cleanup(r.close)
	return r
}

func (r *dnsRecorder) serveUDP() {
	defer r.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, from, err := r.udp.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if reply := r.answer(buf[:n]); reply != nil {
			r.udp.WriteTo(reply, from)
		}
	}
}

func (r *dnsRecorder) serveTCP() {
	defer r.wg.Done()
	for {
		c, err := r.tcp.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns[c] = struct{}{}
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() {
				r.mu.Lock()
				delete(r.conns, c)
				r.mu.Unlock()
				c.Close()
			}()
			for {
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				msg := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, msg); err != nil {
					return
				}
				reply := r.answer(msg)
				if reply == nil {
					return
				}
				c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(reply))))
				c.Write(reply)
			}
		}()
	}
}

// answer records a query's name and returns an NXDOMAIN reply to it.
func (r *dnsRecorder) answer(q []byte) []byte {
	if len(q) < 12 {
		r.record(fmt.Sprintf("(malformed query of %d bytes)", len(q)))
		return nil
	}
	var labels []string
	i := 12
	for i < len(q) && q[i] != 0 && i+1+int(q[i]) <= len(q) {
		labels = append(labels, string(q[i+1:i+1+int(q[i])]))
		i += 1 + int(q[i])
	}
	end := min(len(q), i+1+4) // the root label, QTYPE, QCLASS
	qtype := ""
	if end == i+5 {
		qtype = " type " + strconv.Itoa(int(binary.BigEndian.Uint16(q[i+1:])))
	}
	r.record(strings.Join(labels, ".") + qtype)
	reply := append([]byte(nil), q[:end]...)
	reply[2] = 0x80 | q[2]&0x79 // QR, the opcode and RD kept
	reply[3] = 0x80 | 3         // RA, NXDOMAIN
	binary.BigEndian.PutUint16(reply[6:], 0)
	binary.BigEndian.PutUint16(reply[8:], 0)
	binary.BigEndian.PutUint16(reply[10:], 0)
	return reply
}

func (r *dnsRecorder) record(name string) {
	r.mu.Lock()
	r.seen = append(r.seen, name)
	r.mu.Unlock()
}

func (r *dnsRecorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

func (r *dnsRecorder) reset() {
	r.mu.Lock()
	r.seen = nil
	r.mu.Unlock()
}

func (r *dnsRecorder) close() {
	r.udp.Close()
	r.tcp.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
