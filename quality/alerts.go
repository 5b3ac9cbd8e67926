package quality

import (
	"fmt"
)

// Alert names (the `alert` label of sidetrack_alert_firing), one per
// threshold of config `alerts:`.
const (
	AlertDirectShareJump    = "direct_share_jump"
	AlertVolumeDrop         = "volume_drop"
	AlertValidationFailRate = "validation_fail_rate"
	AlertDLQDepth           = "dlq_depth"
)

var alertNames = [...]string{AlertDirectShareJump, AlertVolumeDrop, AlertValidationFailRate, AlertDLQDepth}

// Windows the alerts compare. Volume and direct share compare the last
// hour with the same hour of the previous day (traffic has a daily
// rhythm); the validation failure rate looks at the last 15 minutes, so a
// deploy that breaks tracking shows quickly.
const (
	alertMinutes      = 60
	validationMinutes = 15
	dayMinutes        = 24 * 60
)

// Alert is one threshold and its current state.
type Alert struct {
	Name string `json:"name"`
	// Enabled is false when its threshold is 0 (config).
	Enabled   bool    `json:"enabled"`
	Firing    bool    `json:"firing"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	// Message says what the figures are, in words.
	Message string `json:"message"`
}

// Alerts evaluates every alert now.
func (t *Tracker) Alerts() []Alert {
	var dlq int64
	if t.dlqDepth != nil {
		dlq = t.dlqDepth()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.alerts
	minEv := uint64(max(a.MinEvents, 1))
	now := t.now().Unix() / 60
	cur := t.sumGlobal(now, alertMinutes)
	prev := t.sumGlobal(now-dayMinutes, alertMinutes)
	val := t.sumGlobal(now, validationMinutes)
	out := make([]Alert, 0, len(alertNames))

	// Direct share jump: absolute rise of the direct share (events with a
	// source) against the same hour yesterday.
	d := Alert{Name: AlertDirectShareJump, Enabled: a.DirectShareJump > 0, Threshold: a.DirectShareJump,
		Message: "not enough attributed events in the last hour and the same hour yesterday"}
	if cur[gAttributed] >= minEv && prev[gAttributed] >= minEv {
		c := float64(cur[gDirect]) / float64(cur[gAttributed])
		p := float64(prev[gDirect]) / float64(prev[gAttributed])
		d.Value = c - p
		d.Firing = d.Enabled && d.Value >= a.DirectShareJump
		d.Message = fmt.Sprintf("direct share %.1f%% in the last hour, %.1f%% the same hour yesterday", 100*c, 100*p)
	}
	out = append(out, d)

	// Volume drop: accepted events in the last hour against the same hour
	// yesterday, as the fraction lost.
	v := Alert{Name: AlertVolumeDrop, Enabled: a.VolumeDrop > 0, Threshold: a.VolumeDrop,
		Message: "not enough events the same hour yesterday to compare"}
	if prev[gAccepted] >= minEv {
		v.Value = 1 - float64(cur[gAccepted])/float64(prev[gAccepted])
		v.Firing = v.Enabled && v.Value >= a.VolumeDrop
		v.Message = fmt.Sprintf("%d accepted events in the last hour, %d the same hour yesterday", cur[gAccepted], prev[gAccepted])
	}
	out = append(out, v)

	// Validation failures: invalid or quarantined among decoded events.
	f := Alert{Name: AlertValidationFailRate, Enabled: a.ValidationFailRate > 0, Threshold: a.ValidationFailRate,
		Message: "not enough events in the last 15 minutes"}
	if val[gObserved] >= minEv {
		f.Value = float64(val[gFailed]) / float64(val[gObserved])
		f.Firing = f.Enabled && f.Value >= a.ValidationFailRate
		f.Message = fmt.Sprintf("%d of %d events invalid or quarantined in the last 15 minutes", val[gFailed], val[gObserved])
	}
	out = append(out, f)

	q := Alert{Name: AlertDLQDepth, Enabled: a.DLQDepth > 0, Threshold: float64(a.DLQDepth), Value: float64(dlq),
		Message: fmt.Sprintf("%d dead letters across destinations", dlq)}
	q.Firing = q.Enabled && dlq >= a.DLQDepth
	out = append(out, q)
	return out
}
