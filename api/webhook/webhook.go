// Package webhook delivers queue results to a caller's `?fal_webhook=URL` the
// way fal does: a JSON envelope POSTed with Ed25519-signed headers, retried on
// failure, with the public keys published as a JWKS so receivers can verify.
//
// Signed message (UTF-8, "\n"-joined):
//
//	<request_id>\n<user_id>\n<unix seconds>\n<hex sha256 of the raw body>
//
// Headers: X-Fal-Webhook-Request-Id, X-Fal-Webhook-User-Id,
// X-Fal-Webhook-Timestamp, X-Fal-Webhook-Signature (hex).
package webhook

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Header names fal uses on webhook requests.
const (
	HeaderRequestID = "X-Fal-Webhook-Request-Id"
	HeaderUserID    = "X-Fal-Webhook-User-Id"
	HeaderTimestamp = "X-Fal-Webhook-Timestamp"
	HeaderSignature = "X-Fal-Webhook-Signature"
)

// MaxSkew is how far a receiver lets the timestamp drift from its clock
// (fal's documented window); it bounds replay of a captured delivery.
const MaxSkew = 300 * time.Second

// Errors that Verify and Check wrap, so callers can tell them apart.
var (
	ErrMissingHeader  = errors.New("webhook: missing header")
	ErrStaleTimestamp = errors.New("webhook: timestamp outside the allowed window")
	ErrBadSignature   = errors.New("webhook: signature does not verify with any key")
	ErrInvalidURL     = errors.New("webhook: invalid URL")
	ErrHostNotAllowed = errors.New("webhook: host not allowed")
)

// Signer holds the server's Ed25519 key pair and its key id.
type Signer struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	kid  string
}

// NewSigner wraps an existing private key (tests, or keys kept elsewhere).
func NewSigner(priv ed25519.PrivateKey) *Signer {
	pub := priv.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	return &Signer{priv: priv, pub: pub, kid: hex.EncodeToString(sum[:])[:16]}
}

// KeyID is the "kid" published in the JWKS: the first 16 hex digits of
// sha256(public key), so it is stable for as long as the key is.
func (s *Signer) KeyID() string { return s.kid }

// PublicKey returns the verifying key.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.pub }

// DeriveKey returns a 32-byte secret for purpose, derived from the private
// key: the servers of a fleet, which share the webhook key, share it too
// (they sign tokens with it that any of them accepts).
func (s *Signer) DeriveKey(purpose string) []byte {
	h := sha256.New()
	h.Write([]byte("falocal derived key\x00" + purpose + "\x00"))
	h.Write(s.priv.Seed())
	return h.Sum(nil)
}

// LoadOrCreate reads a PEM (PKCS#8) Ed25519 private key from path, creating
// it (mode 0600, parent directories 0700) on first use. The key must persist:
// receivers pin the JWKS, so a new key per start would break their checks.
func LoadOrCreate(path string) (*Signer, error) {
	if s, err := load(path); !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// Write a temp file and link it into place: the key never appears half
	// written, and if another process created it meanwhile we use theirs.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".webhook-key-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return load(path)
		}
		// Filesystems without hard links: a rename still never exposes a
		// partial file, at the cost of the create race.
		if err := os.Rename(tmp.Name(), path); err != nil {
			return nil, err
		}
	}
	return NewSigner(priv), nil
}

func load(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("webhook: %s: no PEM PRIVATE KEY block", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("webhook: %s: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("webhook: %s: %T is not an Ed25519 key", path, key)
	}
	return NewSigner(priv), nil
}

type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid,omitempty"`
}

type jwks struct {
	Keys []jwk `json:"keys"`
}

// JWKS returns the public key set fal-style receivers fetch:
// {"keys":[{"kty":"OKP","crv":"Ed25519","x":"<base64url>","kid":"…"}]}.
func (s *Signer) JWKS() []byte {
	b, _ := json.Marshal(jwks{Keys: []jwk{{
		Kty: "OKP", Crv: "Ed25519",
		X:   base64.RawURLEncoding.EncodeToString(s.pub),
		Kid: s.kid,
	}}})
	return b
}

// message is the exact byte string that is signed.
func message(requestID, userID, ts string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return []byte(requestID + "\n" + userID + "\n" + ts + "\n" + hex.EncodeToString(sum[:]))
}

// Sign returns the hex Ed25519 signature of one delivery; ts is sent (and
// signed) in whole Unix seconds.
func (s *Signer) Sign(requestID, userID string, ts time.Time, body []byte) string {
	msg := message(requestID, userID, strconv.FormatInt(ts.Unix(), 10), body)
	return hex.EncodeToString(ed25519.Sign(s.priv, msg))
}

// Verify is the receiver's check: the timestamp must be within MaxSkew of now
// and the signature must verify under at least one key of the JWKS (keys
// rotate, so every OKP/Ed25519 key is tried).
func Verify(jwksDoc []byte, hdr http.Header, body []byte, now time.Time) error {
	for _, h := range []string{HeaderRequestID, HeaderUserID, HeaderTimestamp, HeaderSignature} {
		// The user id may legitimately be empty; only absence is an error.
		if len(hdr.Values(h)) == 0 {
			return fmt.Errorf("%w: %s", ErrMissingHeader, h)
		}
	}
	tsText := hdr.Get(HeaderTimestamp)
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not Unix seconds", ErrStaleTimestamp, tsText)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > MaxSkew || d < -MaxSkew {
		return fmt.Errorf("%w: off by %s", ErrStaleTimestamp, d.Round(time.Second))
	}
	sig, err := hex.DecodeString(hdr.Get(HeaderSignature))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: malformed signature", ErrBadSignature)
	}
	var set jwks
	if err := json.Unmarshal(jwksDoc, &set); err != nil {
		return fmt.Errorf("webhook: JWKS: %w", err)
	}
	msg := message(hdr.Get(HeaderRequestID), hdr.Get(HeaderUserID), tsText, body)
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" {
			continue
		}
		// JWK says unpadded base64url, but tolerate padding from sloppy publishers.
		pub, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.X, "="))
		if err != nil || len(pub) != ed25519.PublicKeySize {
			continue
		}
		if ed25519.Verify(pub, msg, sig) {
			return nil
		}
	}
	return ErrBadSignature
}

// Result is a finished queue request as the webhook reports it.
type Result struct {
	RequestID string
	OK        bool
	// Payload is the model output (OK) as JSON.
	Payload json.RawMessage
	// ErrorStatus is the HTTP status the request failed with (0 = 500).
	ErrorStatus int
	// ErrorBody is the fal error body, e.g. {"detail":[…]}.
	ErrorBody json.RawMessage
}

// envelope fixes the field order of fal's webhook body.
type envelope struct {
	RequestID        string          `json:"request_id"`
	GatewayRequestID string          `json:"gateway_request_id"`
	Status           string          `json:"status"`
	Error            *string         `json:"error"`
	Payload          json.RawMessage `json:"payload"`
	PayloadError     string          `json:"payload_error,omitempty"`
}

// Payload builds fal's webhook body. Success: status "OK", payload = output,
// error null. Failure: status "ERROR", error "Invalid status code: <n>",
// payload = error body. Output that is not valid JSON is sent as payload null
// with payload_error saying why; an empty one is just null.
func Payload(r Result) []byte {
	// There is no separate gateway here, so both ids are the request id.
	env := envelope{RequestID: r.RequestID, GatewayRequestID: r.RequestID, Status: "OK"}
	raw := r.Payload
	if !r.OK {
		code := r.ErrorStatus
		if code == 0 {
			code = http.StatusInternalServerError
		}
		msg := fmt.Sprintf("Invalid status code: %d", code)
		env.Status, env.Error, raw = "ERROR", &msg, r.ErrorBody
	}
	switch {
	case len(bytes.TrimSpace(raw)) == 0:
		// A nil RawMessage marshals as null.
	case !json.Valid(raw):
		// Unmarshal re-scans only to say where the JSON breaks.
		var v json.RawMessage
		why := "invalid JSON"
		if err := json.Unmarshal(raw, &v); err != nil {
			why = "invalid JSON: " + err.Error()
		}
		env.PayloadError = why
	default:
		env.Payload = raw
	}
	b, err := json.Marshal(env)
	if err != nil {
		// Unreachable: every field is valid JSON by now.
		panic(err)
	}
	return b
}

// StatusError is a delivery attempt answered with a non-2xx status.
type StatusError struct{ StatusCode int }

func (e *StatusError) Error() string {
	return fmt.Sprintf("webhook: receiver answered %d", e.StatusCode)
}

// DefaultBackoff is fal's retry schedule: the waits before attempts 2..7.
var DefaultBackoff = []time.Duration{
	1 * time.Second, 2 * time.Second, 5 * time.Second,
	10 * time.Second, 30 * time.Second, 60 * time.Second,
}

// Deliverer POSTs results to webhook URLs.
type Deliverer struct {
	Signer *Signer
	// Client sends the requests; nil = a client with a 30 s timeout, so a
	// receiver that never answers cannot pin a delivery forever.
	Client *http.Client
	// UserID is signed and sent as X-Fal-Webhook-User-Id.
	UserID string
	// Allowed says whether a host (no port) may receive webhooks; it is the
	// server-side fetch rule, since a webhook is a request the server makes
	// on a caller's behalf. nil = loopback only.
	Allowed func(host string) bool
	// Backoff is the waits between attempts; nil = DefaultBackoff, an empty
	// non-nil slice = a single attempt.
	Backoff []time.Duration
	// Log gets one line per failed attempt and per outcome; nil = discard.
	Log *slog.Logger

	now func() time.Time // tests replace the clock
}

// Check validates a webhook URL at submit time (http or https, a host that
// Allowed accepts), so the API can answer 422 before queueing anything.
func (d *Deliverer) Check(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	return d.checkURL(u)
}

func (d *Deliverer) checkURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: scheme %q (want http or https)", ErrInvalidURL, u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("%w: no host", ErrInvalidURL)
	}
	allowed := d.Allowed
	if allowed == nil {
		allowed = isLoopback
	}
	if !allowed(host) {
		return fmt.Errorf("%w: %s", ErrHostNotAllowed, host)
	}
	return nil
}

// isLoopback accepts localhost and loopback IP literals without resolving
// anything, so the check itself makes no network traffic.
func isLoopback(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Deliver POSTs Payload(r) to rawURL, retrying network errors and non-2xx
// answers after each wait in Backoff. Every attempt is signed afresh with the
// current time, so a late retry still passes the receiver's 300 s window. It
// returns nil on a 2xx, the last attempt's error once the schedule is spent,
// or ctx's error (wrapping it) as soon as ctx is done.
func (d *Deliverer) Deliver(ctx context.Context, rawURL string, r Result) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	if err := d.checkURL(u); err != nil {
		return err
	}
	if d.Signer == nil {
		return errors.New("webhook: no signer")
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := d.Backoff
	if backoff == nil {
		backoff = DefaultBackoff
	}
	client := d.client()
	body := Payload(r)
	log = log.With("request_id", r.RequestID, "webhook", u.Redacted())

	var last error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(backoff[attempt-1])
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("webhook: %w (last attempt: %v)", ctx.Err(), last)
			case <-t.C:
			}
		}
		last = d.attempt(ctx, client, u.String(), r.RequestID, body)
		if last == nil {
			log.Debug("webhook delivered", "attempts", attempt+1)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("webhook: %w (last attempt: %v)", ctx.Err(), last)
		}
		if errors.Is(last, ErrHostNotAllowed) || errors.Is(last, ErrInvalidURL) {
			// A redirect to a refused target will be refused again.
			log.Warn("webhook redirected to a refused target", "err", last)
			return last
		}
		if attempt >= len(backoff) {
			log.Warn("webhook delivery failed, giving up", "attempts", attempt+1, "err", last)
			return fmt.Errorf("webhook: giving up after %d attempts: %w", attempt+1, last)
		}
		log.Info("webhook attempt failed, retrying", "attempt", attempt+1, "in", backoff[attempt], "err", last)
	}
}

func (d *Deliverer) attempt(ctx context.Context, client *http.Client, target, requestID string, body []byte) error {
	now := time.Now
	if d.now != nil {
		now = d.now
	}
	ts := now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderRequestID, requestID)
	req.Header.Set(HeaderUserID, d.UserID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(HeaderSignature, d.Signer.Sign(requestID, d.UserID, ts, body))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	// Drain a little so the connection can be reused for the next delivery,
	// but never read an unbounded answer.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &StatusError{StatusCode: resp.StatusCode}
	}
	return nil
}

// client returns a copy of the configured client whose redirects must pass
// Check too; otherwise an allowed host could bounce the POST anywhere.
func (d *Deliverer) client() *http.Client {
	var c http.Client
	if d.Client != nil {
		c = *d.Client
	} else {
		c.Timeout = 30 * time.Second
	}
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := d.checkURL(req.URL); err != nil {
			return err
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("webhook: stopped after 10 redirects")
		}
		return nil
	}
	return &c
}
