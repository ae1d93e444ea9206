//go:build tools

// Package tools records the command this module builds (etcd's server main).
package tools

import _ "go.etcd.io/etcd/server/v3"
