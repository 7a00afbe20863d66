package main

import (
	"log/slog"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
)

// fleetFacts is what a worker of a shared queue tells the others: the
// endpoints it can run (those whose default model is installed here) and
// those whose default model it holds in memory, which it claims first.
type fleetFacts struct {
	runnable []string
	model    map[string]string // endpoint id → its default model
	res      *engine.Residency
}

// newFleetFacts reads the installed models once: installing one while the
// server runs takes a restart to be advertised.
func newFleetFacts(reg *pipelines.Registry, res *engine.Residency, log *slog.Logger) *fleetFacts {
	f := &fleetFacts{runnable: []string{}, model: map[string]string{}, res: res}
	for _, id := range reg.IDs() {
		m, ok, err := reg.DescribeModels(id)
		switch {
		case err != nil:
			log.Warn("fleet: cannot tell whether this server can run an endpoint; not claiming its requests", "endpoint", id, "err", err)
		case !ok:
			f.runnable = append(f.runnable, id) // a pipeline without installed models
		case m.Default != "":
			f.runnable = append(f.runnable, id)
			f.model[id] = m.Default
		}
	}
	return f
}

func (f *fleetFacts) canRun() []string { return f.runnable }

func (f *fleetFacts) resident() []string {
	held := map[string]bool{}
	for _, m := range f.res.Resident() {
		held[m] = true
	}
	out := []string{}
	for _, id := range f.runnable {
		if held[f.model[id]] {
			out = append(out, id)
		}
	}
	return out
}
