package proxy

// registerTracking installs the tracking-route handlers (GA4, Segment,
// /collect, forms) into s.tracking. Filled by the ingest work.
func (s *Server) registerTracking() {}
