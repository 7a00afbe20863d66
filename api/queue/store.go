package queue

import (
	"context"
	"errors"
	"time"
)

// Store is what the API needs of a queue. Queue keeps requests in one
// process's bbolt file; api/queue/pgqueue shares them among many processes
// through PostgreSQL. Both keep the same promises: a request accepted by
// Submit is never lost, runs at most once at a time, and completes once.
type Store interface {
	// Submit accepts a request and returns how many wait before it.
	Submit(r Record) (int, error)
	// Get returns a request and, while it is queued, its position.
	Get(id string) (Record, int, error)
	// Subscribe signals every change of a request (status, logs) on the
	// channel until stop is called.
	Subscribe(id string) (ch <-chan struct{}, stop func())
	// Cancel ends a queued request or interrupts a running one.
	Cancel(id string) (CancelResult, error)
	// Wait blocks until the request completes or ctx ends.
	Wait(ctx context.Context, id string) (Record, error)
	// Forget lets go of a completed sync (ephemeral) request.
	Forget(id string)
	// MarkWebhookDone records that a request's webhook was delivered or
	// given up.
	MarkWebhookDone(id string) error
	// Depth counts the queued and the running requests.
	Depth() (queued, running int)
	// Sweep deletes completed requests older than cutoff and returns the
	// output file ids they owned.
	Sweep(cutoff time.Time) (int, []string, error)
	// Recent lists durable requests, newest first (see Queue.Recent).
	Recent(limit int, keep func(id string) bool) ([]Record, error)
	// Drain stops starting requests; Draining is closed once it is called.
	Drain()
	Draining() <-chan struct{}
	// Stop drains and lets running requests finish while ctx allows; Close
	// then releases the storage.
	Stop(ctx context.Context)
	Close(ctx context.Context) error
}

var _ Store = (*Queue)(nil)

// ErrUnavailable wraps the errors of a store that cannot reach its
// database for now (a shared queue while PostgreSQL restarts): the request
// keeps its state, the caller may try again.
var ErrUnavailable = errors.New("queue database unreachable")
