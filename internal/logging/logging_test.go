package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestZapBridge: etcd's zap entries come out as slog JSON records of the
// same shape as etcdkit's, filtered by level, and the "server closed"
// errors of a stop announced with Stopping drop to debug.
func TestZapBridge(t *testing.T) {
	var buf bytes.Buffer
	lg := New(&buf, slog.LevelInfo)
	zl, bridge := Zap(lg, slog.LevelWarn, "etcd")
	zl.Info("dropped: below warn")
	zl.With(zap.String("member", "m1")).Warn("slow fdatasync", zap.Duration("took", 2e9), zap.Int("n", 3))
	zl.Error("serving failed", zap.Error(http.ErrServerClosed))
	bridge.Stopping()
	zl.Error("serving failed", zap.Error(http.ErrServerClosed))          // a clean stop: debug, dropped
	zl.Error("disk failed", zap.Error(errors.New("input/output error"))) // still an error
	lg.Info("ours")

	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		recs = append(recs, r)
	}
	want := []struct{ level, msg string }{{"WARN", "slow fdatasync"}, {"ERROR", "serving failed"}, {"ERROR", "disk failed"}, {"INFO", "ours"}}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d:\n%s", len(recs), len(want), buf.String())
	}
	for i, w := range want {
		if recs[i]["level"] != w.level || recs[i]["msg"] != w.msg || recs[i]["time"] == nil {
			t.Errorf("record %d: %v, want %s %q", i, recs[i], w.level, w.msg)
		}
	}
	if r := recs[0]; r["component"] != "etcd" || r["member"] != "m1" || r["n"] != float64(3) || r["caller"] == nil {
		t.Errorf("fields of a zap entry: %v", r)
	}
}

func TestParseLevel(t *testing.T) {
	for s, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "WARN": slog.LevelWarn, "error": slog.LevelError} {
		if got, err := ParseLevel(s); err != nil || got != want {
			t.Errorf("%q: %v %v", s, got, err)
		}
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Error("accepted a level that does not exist")
	}
}
