package localtls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func pool(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(ca.CertPEM())
	return p
}

func TestCAPersistsAndKeyIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "ca")
	a, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.CertPEM(), b.CertPEM()) {
		t.Fatal("second load minted a new CA")
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil || !bytes.Equal(onDisk, a.CertPEM()) {
		t.Fatalf("ca.pem on disk differs from CertPEM (err %v)", err)
	}
	if a.CertPath() != filepath.Join(dir, CertFile) || !filepath.IsAbs(a.CertPath()) {
		t.Fatalf("CertPath = %q", a.CertPath())
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", st.Mode().Perm())
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	if len(leftovers) > 0 {
		t.Fatalf("temp files left: %v", leftovers)
	}

	c := a.Certificate()
	if !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero || c.Subject.CommonName != "falocal local CA" {
		t.Fatalf("CA fields: IsCA %v MaxPathLen %d zero %v CN %q", c.IsCA, c.MaxPathLen, c.MaxPathLenZero, c.Subject.CommonName)
	}
	if life := c.NotAfter.Sub(c.NotBefore); life < 9*365*24*time.Hour {
		t.Fatalf("CA lifetime %v", life)
	}
}

func TestCAFilesMustPair(t *testing.T) {
	// Only one of the two files: refuse rather than replace a trusted CA.
	for _, keep := range []string{CertFile, KeyFile} {
		dir := t.TempDir()
		if _, err := LoadOrCreateCA(dir); err != nil {
			t.Fatal(err)
		}
		other := KeyFile
		if keep == KeyFile {
			other = CertFile
		}
		os.Remove(filepath.Join(dir, other))
		if _, err := LoadOrCreateCA(dir); err == nil || !strings.Contains(err.Error(), other) {
			t.Fatalf("only %s present: err = %v", keep, err)
		}
	}

	// Key of one CA with the certificate of another.
	d1, d2 := t.TempDir(), t.TempDir()
	if _, err := LoadOrCreateCA(d1); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(d2); err != nil {
		t.Fatal(err)
	}
	cert2, _ := os.ReadFile(filepath.Join(d2, CertFile))
	if err := os.WriteFile(filepath.Join(d1, CertFile), cert2, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(d1); err == nil || !strings.Contains(err.Error(), "do not match") {
		t.Fatalf("mismatched pair: err = %v", err)
	}

	// Garbage.
	d3 := t.TempDir()
	os.WriteFile(filepath.Join(d3, CertFile), []byte("nope"), 0o644)
	os.WriteFile(filepath.Join(d3, KeyFile), []byte("nope"), 0o600)
	if _, err := LoadOrCreateCA(d3); err == nil {
		t.Fatal("garbage files accepted")
	}
}

func TestLeafVerifies(t *testing.T) {
	ca := newTestCA(t)
	roots := pool(ca)
	for _, tc := range []struct{ host, verifyAs string }{
		{"queue.fal.run", "queue.fal.run"},
		{"Queue.Fal.Run.", "queue.fal.run"},
		{"127.0.0.1", "127.0.0.1"},
		{"127.0.0.1", "localhost"},
		{"::1", "::1"},
		{"", "127.0.0.1"},
		{"10.1.2.3", "10.1.2.3"},
	} {
		lc, err := ca.Leaf(tc.host)
		if err != nil {
			t.Fatalf("Leaf(%q): %v", tc.host, err)
		}
		leaf := lc.Leaf
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: tc.verifyAs, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("Leaf(%q) as %q: %v", tc.host, tc.verifyAs, err)
		}
		if leaf.IsCA || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
			t.Errorf("Leaf(%q): IsCA %v EKU %v", tc.host, leaf.IsCA, leaf.ExtKeyUsage)
		}
		if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 360*24*time.Hour || life > 398*24*time.Hour {
			t.Errorf("Leaf(%q) lifetime %v", tc.host, life)
		}
	}

	// A leaf must not verify for another name, nor against another CA.
	lc, _ := ca.Leaf("queue.fal.run")
	if _, err := lc.Leaf.Verify(x509.VerifyOptions{DNSName: "fal.run", Roots: roots}); err == nil {
		t.Error("queue.fal.run leaf verified as fal.run")
	}
	if _, err := lc.Leaf.Verify(x509.VerifyOptions{DNSName: "queue.fal.run", Roots: pool(newTestCA(t))}); err == nil {
		t.Error("leaf verified against a foreign CA")
	}

	// Cached: same certificate for equivalent names.
	again, _ := ca.Leaf("QUEUE.fal.run")
	if again != lc {
		t.Error("leaf not cached")
	}
	lo1, _ := ca.Leaf("localhost")
	lo2, _ := ca.Leaf("127.0.0.1")
	if lo1 != lo2 {
		t.Error("loopback names got different leaves")
	}

	for _, bad := range []string{"a b", "-x.com", "x..com", "evil\x00.com", strings.Repeat("a", 64) + ".com", "fe80::1%eth0"} {
		if _, err := ca.Leaf(bad); err == nil {
			t.Errorf("Leaf(%q) accepted", bad)
		}
	}
}

func TestTLSConfigPicksBySNI(t *testing.T) {
	ca := newTestCA(t)
	cfg := ca.TLSConfig()
	if len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != "http/1.1" {
		t.Fatalf("NextProtos %v", cfg.NextProtos)
	}
	c, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "rest.fal.ai"})
	if err != nil || c.Leaf.DNSNames[0] != "rest.fal.ai" {
		t.Fatalf("SNI rest.fal.ai: %v %v", c, err)
	}
	c, err = cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := c.Leaf.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	if err := c.Leaf.VerifyHostname("::1"); err != nil {
		t.Error(err)
	}
}
