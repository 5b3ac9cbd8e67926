package main

import (
	"context"
	"time"
)

// generator drives one phase and says how much CPU it spent doing so.
type generator interface {
	name() string
	cpuNote() string
	// run drives base with wl as l says; genCPU is the generator's own CPU.
	run(ctx context.Context, base string, wl *workload, l load) (res *loadResult, genCPU time.Duration, err error)
}

// newGenerator picks the throughput generator: the fasthttp one by
// default ("auto"), wrk when -generator wrk asks for it. Measured pinned on
// the reference machine, the fasthttp generator spends ≈ 7 µs of CPU per
// request (webhook included) and drives the ceiling to ≈ 141k req/s,
// while wrk with the Lua script that gives every request a fresh id
// spends ≈ 15 µs and saturates its core at ≈ 66k: with wrk the ceiling
// measures the generator. Open-loop phases always use the fasthttp
// generator.
func newGenerator(o options) (generator, error) {
	fh := fasthttpGen{}
	switch o.Generator {
	case "", "auto", "fasthttp":
		return fh, nil
	case "wrk":
		w, err := newWrkGen(true)
		if err != nil {
			return nil, err
		}
		if w != nil {
			return w, nil
		}
		return fh, nil
	}
	return nil, errUsage("-generator must be auto, wrk or fasthttp")
}

// errUsage is a bad flag value.
type errUsage string

func (e errUsage) Error() string { return string(e) }

// fasthttpGen is the in-process fasthttp generator (closed or open loop).
type fasthttpGen struct{}

func (fasthttpGen) name() string { return "fasthttp" }

func (fasthttpGen) cpuNote() string {
	return "getrusage of the whole bench process over the phase: the fasthttp generator plus the counting webhook (the origin is a child of its own)"
}

func (fasthttpGen) run(ctx context.Context, base string, wl *workload, l load) (*loadResult, time.Duration, error) {
	t0 := selfCPU()
	res, err := drive(ctx, base, wl, l)
	return res, selfCPU() - t0, err
}
