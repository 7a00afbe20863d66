// Package deploy holds no code: its test checks the deployment examples
// (kubernetes/, compose.yaml) against the Kubernetes API types and the
// server's own flags and environment variables.
package deploy
