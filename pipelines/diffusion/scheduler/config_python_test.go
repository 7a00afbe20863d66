package scheduler

import "testing"

func TestPythonJSON(t *testing.T) {
	in := `{"a": -Infinity, "b": Infinity, "c": NaN, "s": "-Infinity \"NaN\"", "d": 1}`
	want := `{"a": -1e308, "b": 1e308, "c": null, "s": "-Infinity \"NaN\"", "d": 1}`
	if got := string(PythonJSON([]byte(in))); got != want {
		t.Fatalf("got %s", got)
	}
	c, err := ParseConfig([]byte(`{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity}`), "")
	if err != nil || c.LambdaMinClipped > -1e300 {
		t.Fatalf("%+v %v", c.LambdaMinClipped, err)
	}
}
