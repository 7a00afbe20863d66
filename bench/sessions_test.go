package bench

import (
	"context"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
)

// threads opens every model file with n threads inside an operator.
func threads(n int) pipelines.SessionFunc {
	return func(_, path string, inputs, outputs []string) engine.SessionSpec {
		return engine.SessionSpec{Path: path, Inputs: inputs, Outputs: outputs, IntraOpThreads: n}
	}
}

// sessionRunner runs a bare session as an upscale.Runner.
type sessionRunner struct{ s engine.Session }

func (r sessionRunner) Do(ctx context.Context, run engine.Run) ([]*engine.Tensor, error) {
	return r.s.Run(ctx, run.Inputs, run.OutputShapes)
}
