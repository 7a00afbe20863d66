package api

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/api/queue/pgqueue"
	"github.com/falocal/falocal/internal/metrics"
)

// Roles of a server in a fleet (Config.Role).
const (
	RoleBoth   = "both"
	RoleAPI    = "api"
	RoleWorker = "worker"
)

// openQueue opens the queue the configuration names: a shared PostgreSQL
// one, or the process's own bbolt file.
func (s *Server) openQueue() error {
	// Webhooks owed from before a restart start during the open, before
	// s.q is set: they wait for ready.
	ready := make(chan struct{})
	defer close(ready)
	workers := s.cfg.Workers
	opts := queue.Options{Workers: workers, MaxQueued: s.cfg.MaxQueued, Log: s.cfg.Logger,
		OnComplete: s.onComplete(ready), OnFinish: s.finished}
	if s.cfg.SharedQueue == "" {
		q, err := queue.Open(s.cfg.QueueDB, s.runRecord, opts)
		if err != nil {
			return err
		}
		s.q = q
		return nil
	}
	if s.cfg.Role == RoleAPI {
		opts.Workers = 0
	}
	node := s.cfg.Node
	if node == "" {
		host, _ := os.Hostname()
		node = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	canRun := s.cfg.CanRun
	if canRun == nil {
		canRun = s.cfg.Registry.IDs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Workers start inside Open: their runs wait until s.shared is set,
	// which decides where a stream's partial outputs go.
	run := func(ctx context.Context, r *queue.Record, logf func(level, msg string), addFile func(id string)) queue.Outcome {
		select {
		case <-ready:
		case <-ctx.Done():
		}
		return s.runRecord(ctx, r, logf, addFile)
	}
	q, err := pgqueue.Open(ctx, s.cfg.SharedQueue, run, pgqueue.Options{Options: opts,
		Node: node, Role: s.cfg.Role, Endpoints: canRun, Resident: s.cfg.Resident, Info: s.cfg.NodeInfo,
		OnPartial: s.partial})
	if err != nil {
		return fmt.Errorf("shared queue: %w", err)
	}
	s.q, s.shared = q, q
	return nil
}

// partial hands a streaming request's partial output to its caller, when
// this server holds it.
func (s *Server) partial(id string, b []byte) {
	v, ok := s.streams.Load(id)
	if !ok {
		return
	}
	select {
	case v.(chan []byte) <- b:
	default: // a slow reader misses previews, never the result
	}
}

// fleetNode is one server in GET /fleet.
type fleetNode = pgqueue.Node

// fleet is GET /fleet: the queue's depth and every server sharing it, with
// what each runs and holds in memory. A server with a queue of its own is a
// fleet of one.
func (s *Server) fleet(c echo.Context) error {
	queued, running := s.q.Depth()
	nodes, err := s.fleetNodes(c.Request().Context())
	if err != nil {
		return queueError(err)
	}
	return c.JSON(http.StatusOK, map[string]any{
		"queue": map[string]int{"queued": queued, "running": running},
		"nodes": nodes,
	})
}

func (s *Server) fleetNodes(ctx context.Context) ([]fleetNode, error) {
	if s.shared != nil {
		return s.shared.Fleet(ctx)
	}
	_, running := s.q.Depth()
	n := fleetNode{Name: s.cfg.Node, Role: s.cfg.Role, Running: running, Seen: time.Now(), Alive: true}
	if n.Name == "" {
		n.Name, _ = os.Hostname()
	}
	if s.cfg.CanRun != nil {
		n.Endpoints = s.cfg.CanRun()
	} else {
		n.Endpoints = s.cfg.Registry.IDs()
	}
	if s.cfg.Resident != nil {
		n.Resident = s.cfg.Resident()
	}
	if s.cfg.NodeInfo != nil {
		n.Info = s.cfg.NodeInfo()
	}
	return []fleetNode{n}, nil
}

// recordFleet sets the fleet series of /metrics.
func (s *Server) recordFleet(ctx context.Context) {
	nodes, err := s.fleetNodes(ctx)
	if err != nil {
		return
	}
	var live []metrics.FleetNode
	for _, n := range nodes {
		if n.Alive {
			live = append(live, metrics.FleetNode{Name: n.Name, Role: n.Role, Running: n.Running, Resident: len(n.Resident)})
		}
	}
	s.m.SetFleet(live)
}
