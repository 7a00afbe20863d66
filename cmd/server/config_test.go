package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestConfig(t *testing.T) {
	for _, c := range []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
		check   func(*Config) bool
	}{
		{"defaults", nil, nil, "", func(c *Config) bool {
			return c.Listen == "127.0.0.1:8080" && c.Workers == 2 && c.Providers == "auto" && c.Retention > 0
		}},
		{"env", map[string]string{"FALOCAL_WORKERS": "4", "FALOCAL_KEYS": "a:b,c:d", "FALOCAL_REQUEST_TIMEOUT": "90s"}, nil, "",
			func(c *Config) bool { return c.Workers == 4 && len(c.keys()) == 2 && c.RequestTimeout.Seconds() == 90 }},
		{"flag beats env", map[string]string{"FALOCAL_WORKERS": "4"}, []string{"-workers", "3"}, "", func(c *Config) bool { return c.Workers == 3 }},
		{"bad env duration", map[string]string{"FALOCAL_REQUEST_TIMEOUT": "600"}, nil, "FALOCAL_REQUEST_TIMEOUT", nil},
		{"bad env int", map[string]string{"FALOCAL_WORKERS": "many"}, nil, "FALOCAL_WORKERS", nil},
		{"bad key", nil, []string{"-keys", "nocolon"}, "key_id:key_secret", nil},
		{"no workers", nil, []string{"-workers", "0"}, "workers", nil},
		{"zero retention", nil, []string{"-retention", "0s"}, "retention", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			cfg, _, err := parse("serve", c.args, io.Discard, func(*flag.FlagSet) {})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(cfg) {
				t.Errorf("config %+v", cfg)
			}
		})
	}
}

func TestCheckExposure(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:8080": true, "localhost:1": true, "[::1]:8080": true,
		"0.0.0.0:8080": false, ":8080": false, "10.0.0.5:80": false} {
		if err := checkExposure(addr, nil); (err == nil) != ok {
			t.Errorf("%s without keys: %v", addr, err)
		}
		if err := checkExposure(addr, []string{"a:b"}); err != nil {
			t.Errorf("%s with keys: %v", addr, err)
		}
	}
}
