// Package logging is etcdkit's one log format: JSON lines written by
// log/slog. Everything a long-running etcdkit process logs goes through it,
// including the embedded etcd member's zap messages and gRPC's, so an
// operator's log pipeline parses one shape (`time`, `level`, `msg`).
package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
)

// New returns the JSON logger writing to w at level and above.
func New(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// ParseLevel reads debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// Bridge hands zap entries (etcd's logger) to a slog handler.
type Bridge struct {
	stopping atomic.Bool
}

// Stopping says the process is shutting down on purpose: from now on, the
// warnings and errors etcd logs because its own listeners were closed
// ("http: Server closed", "use of closed network connection") are
// debug-level, so a clean stop leaves nothing at warn or error level.
func (b *Bridge) Stopping() { b.stopping.Store(true) }

// Zap returns a zap logger that writes to l's handler, as records of the
// same JSON shape, for entries at min and above. Each record carries
// `component` (e.g. "etcd") and etcd's `caller`; zap's stack traces are
// dropped so every message stays one line.
func Zap(l *slog.Logger, min slog.Level, component string) (*zap.Logger, *Bridge) {
	b := &Bridge{}
	c := &core{h: l.Handler(), min: zapLevel(min), bridge: b, component: component}
	return zap.New(c, zap.AddCaller()), b
}

type core struct {
	h         slog.Handler
	min       zapcore.Level
	bridge    *Bridge
	component string
	fields    []zapcore.Field
}

func (c *core) Enabled(l zapcore.Level) bool { return l >= c.min }

func (c *core) With(fs []zapcore.Field) zapcore.Core {
	cp := *c
	cp.fields = append(slices.Clip(c.fields), fs...)
	return &cp
}

func (c *core) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *core) Write(e zapcore.Entry, fs []zapcore.Field) error {
	all := append(slices.Clip(c.fields), fs...)
	level := slogLevel(e.Level)
	if level >= slog.LevelWarn && c.bridge.stopping.Load() && closedOnStop(all) {
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if !c.h.Enabled(ctx, level) {
		return nil
	}
	r := slog.NewRecord(e.Time, level, e.Message, 0)
	r.AddAttrs(slog.String("component", c.component))
	if e.Caller.Defined {
		r.AddAttrs(slog.String("caller", e.Caller.TrimmedPath()))
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range all {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r.AddAttrs(slog.Any(k, enc.Fields[k]))
	}
	return c.h.Handle(ctx, r)
}

func (c *core) Sync() error { return nil }

// closedOnStop reports whether an entry's error is a listener or server
// closed under it, which is what a requested stop does.
func closedOnStop(fs []zapcore.Field) bool {
	for _, f := range fs {
		err, ok := f.Interface.(error)
		if f.Type != zapcore.ErrorType || !ok {
			continue
		}
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, grpc.ErrServerStopped) ||
			strings.Contains(err.Error(), "closed") {
			return true
		}
	}
	return false
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l <= slog.LevelDebug:
		return zapcore.DebugLevel
	case l <= slog.LevelInfo:
		return zapcore.InfoLevel
	case l <= slog.LevelWarn:
		return zapcore.WarnLevel
	}
	return zapcore.ErrorLevel
}
