package queue

// Stop is how the old process of a service stopped during a restart or
// reload step, recorded on that step.
type Stop struct {
	// DurationMS is how long the old process took to stop, from the
	// step's restart or reload command until it was gone.
	DurationMS int64 `json:"duration_ms"`
	// Ended says concierge had it killed: it had closed its port and only
	// open requests (OpenConns of them) kept it alive.
	Ended     bool `json:"ended,omitempty"`
	OpenConns int  `json:"open_conns,omitempty"`
	// EndError is why ending it failed; the stop then took its course.
	EndError string `json:"end_error,omitempty"`
}
