package weights

import (
	"errors"
	"net/http"
)

type refuse struct{}

func (refuse) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("test: network access refused")
}

// noNetwork makes a client that fails any request, so a test proves it works
// from the cache alone.
func noNetwork() *http.Client { return &http.Client{Transport: refuse{}} }
