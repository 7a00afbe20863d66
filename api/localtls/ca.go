// Package localtls lets unmodified fal clients reach the local server over
// TLS. fal-client hard-codes https:// and fal's host names, so the zero-code
// route is HTTPS_PROXY pointing at us plus SSL_CERT_FILE pointing at our CA:
// the client sends CONNECT fal.run:443, and we terminate TLS ourselves with a
// leaf minted from a local CA and serve the normal handler on the decrypted
// stream. Nothing here ever dials out; a CONNECT is only ever answered by us.
//
// CA holds that local CA; Listen serves plain HTTP and direct TLS on one
// port; Proxy answers CONNECT for allowed host names.
package localtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// File names inside the CA directory.
const (
	CertFile = "ca.pem"
	KeyFile  = "ca-key.pem"
)

const (
	caSubject   = "falocal local CA"
	caLifetime  = 10 * 365 * 24 * time.Hour
	leafLife    = 365 * 24 * time.Hour // under the 398 days some clients cap server certs at
	backdate    = time.Hour            // tolerate small clock skew between client and us
	renewBefore = 24 * time.Hour       // re-mint a cached leaf this close to its expiry
	maxLeaves   = 1024                 // direct-TLS SNI is client-chosen; bound the cache
)

// CA is the local certificate authority whose certificate clients trust via
// SSL_CERT_FILE. It mints short-lived leaf certificates on demand. It is safe
// for concurrent use.
type CA struct {
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	certPEM  []byte
	certPath string

	mu     sync.Mutex
	leaves map[string]*tls.Certificate // by normalised name; "" = loopback leaf
}

// LoadOrCreateCA loads the CA from dir/ca-key.pem and dir/ca.pem, or creates
// both (ECDSA P-256, key as PKCS#8 with mode 0600, self-signed CA:true with
// MaxPathLen 0, valid 10 years, subject "falocal local CA") when neither
// exists, so clients configured once keep trusting us across restarts. It
// fails, naming the file, when only one exists, when they do not match, or
// when the certificate is not a usable CA, rather than silently replacing a
// certificate a client may already trust.
//
// Two processes creating the same directory at once may race; the loser then
// fails the match check on its next start instead of serving a wrong chain.
func LoadOrCreateCA(dir string) (*CA, error) {
	if dir == "" {
		return nil, errors.New("localtls: empty CA directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("localtls: %w", err)
	}
	certPath, keyPath := filepath.Join(abs, CertFile), filepath.Join(abs, KeyFile)
	certOK, err := exists(certPath)
	if err != nil {
		return nil, err
	}
	keyOK, err := exists(keyPath)
	if err != nil {
		return nil, err
	}
	switch {
	case certOK && keyOK:
		return loadCA(certPath, keyPath)
	case certOK:
		return nil, fmt.Errorf("localtls: %s exists but its key %s does not; remove %s to create a new CA", certPath, keyPath, certPath)
	case keyOK:
		return nil, fmt.Errorf("localtls: %s exists but its certificate %s does not; remove %s to create a new CA", keyPath, certPath, keyPath)
	}
	return createCA(abs, certPath, keyPath)
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("localtls: %w", err)
}

func loadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("localtls: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("localtls: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("localtls: %s: no CERTIFICATE PEM block", certPath)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("localtls: %s: %w", certPath, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("localtls: %s: no PKCS#8 PRIVATE KEY PEM block", keyPath)
	}
	anyKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("localtls: %s: %w", keyPath, err)
	}
	key, ok := anyKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("localtls: %s: key is %T, want ECDSA", keyPath, anyKey)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("localtls: %s and %s do not match; remove both to create a new CA", keyPath, certPath)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("localtls: %s is not a CA certificate; remove it and %s to create a new one", certPath, keyPath)
	}
	if time.Now().After(cert.NotAfter) {
		return nil, fmt.Errorf("localtls: %s expired on %s; remove it and %s to create a new one", certPath, cert.NotAfter.Format(time.DateOnly), keyPath)
	}
	return newCA(cert, key, pem.EncodeToMemory(cb), certPath), nil
}

func createCA(dir, certPath, keyPath string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("localtls: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("localtls: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: caSubject},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true, // only leaves below us, never intermediates
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("localtls: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("localtls: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("localtls: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// Key first: a crash between the two leaves "key without cert", which
	// LoadOrCreateCA reports instead of pairing a cert with a missing key.
	if err := writeAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	return newCA(cert, key, certPEM, certPath), nil
}

// writeAtomic writes via a temp file and rename so a reader never sees a
// half-written PEM, and the key is never world-readable, even briefly.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("localtls: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("localtls: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("localtls: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("localtls: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("localtls: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("localtls: %w", err)
	}
	return nil
}

func newCA(cert *x509.Certificate, key *ecdsa.PrivateKey, certPEM []byte, certPath string) *CA {
	return &CA{cert: cert, key: key, certPEM: certPEM, certPath: certPath, leaves: map[string]*tls.Certificate{}}
}

func randomSerial() *big.Int {
	// 128 random bits: unique without keeping state across restarts.
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n.Add(n, big.NewInt(1)) // serials must be positive
}

// CertPEM returns the CA certificate in PEM form, for clients' trust stores.
func (c *CA) CertPEM() []byte { return append([]byte(nil), c.certPEM...) }

// CertPath returns the absolute path of ca.pem, the value for SSL_CERT_FILE.
func (c *CA) CertPath() string { return c.certPath }

// Certificate returns the parsed CA certificate (shared; do not modify).
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Leaf returns a server certificate for host, minted on first use and cached
// until a day before it expires. An IP address gets an IP SAN, a host name a
// DNS SAN; "", "localhost", "127.0.0.1" and "::1" all get the shared loopback
// leaf (DNS localhost, IP 127.0.0.1 and ::1). Leaves are ECDSA P-256,
// serverAuth only, valid about a year (never past the CA). The result is
// shared; callers must not modify it.
func (c *CA) Leaf(host string) (*tls.Certificate, error) {
	name := normalizeHost(host)
	var ip net.IP
	switch {
	case name == "" || name == "localhost":
		name = ""
	case net.ParseIP(name) != nil:
		ip = net.ParseIP(name)
		if ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback) {
			name, ip = "", nil
		} else {
			name = ip.String()
		}
	case !validDNSName(name):
		return nil, fmt.Errorf("localtls: %q is not a host name or IP address", host)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if lc, ok := c.leaves[name]; ok && now.Before(lc.Leaf.NotAfter.Add(-renewBefore)) {
		return lc, nil
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(leafLife),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	switch {
	case name == "":
		tmpl.Subject.CommonName = "localhost"
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	case ip != nil:
		tmpl.Subject.CommonName = name
		tmpl.IPAddresses = []net.IP{ip}
	default:
		tmpl.Subject.CommonName = name
		tmpl.DNSNames = []string{name}
	}
	if tmpl.NotAfter.After(c.cert.NotAfter) {
		tmpl.NotAfter = c.cert.NotAfter // a leaf outliving its issuer would not verify anyway
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("localtls: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("localtls: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("localtls: %w", err)
	}
	lc := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	if len(c.leaves) >= maxLeaves {
		clear(c.leaves)
	}
	c.leaves[name] = lc
	return lc, nil
}

// TLSConfig returns a fresh server config (callers may modify it) that picks
// the leaf by SNI; a client without SNI (it dialled an IP address) gets the
// loopback leaf. Only http/1.1 is offered, since the handlers behind it are
// served by net/http's HTTP/1 path (Listen, Proxy).
func (c *CA) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.Leaf(hello.ServerName)
		},
	}
}

// normalizeHost lower-cases and drops a trailing root dot, so "Fal.Run." and
// "fal.run" share a leaf and a policy decision.
func normalizeHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// validDNSName accepts LDH labels (plus '_', seen in real names) so that a
// client-chosen SNI cannot put arbitrary bytes into a certificate.
func validDNSName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
				return false
			}
		}
	}
	return true
}
