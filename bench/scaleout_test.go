package main

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestScaleOutSmoke runs the scale-out mode small: it asserts delivery
// (nothing acknowledged is lost, nothing doubled without faults), never
// speed.
func TestScaleOutSmoke(t *testing.T) {
	var logs bytes.Buffer
	rep, err := RunScaleOut(context.Background(), ScaleOutOptions{
		Edges: 2, Forwarders: 2, Partitions: 4, Connections: 4, Duration: 500 * time.Millisecond,
	}, &logs)
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	t.Log(text.String())
	if rep.Acked == 0 || rep.Lost != 0 || rep.Duplicates != 0 {
		t.Fatalf("acked %d, lost %d, duplicates %d", rep.Acked, rep.Lost, rep.Duplicates)
	}
}
