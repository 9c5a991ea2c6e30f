package legacy

// DirectoryStats is the supernode's directory at one moment, for metrics.
type DirectoryStats struct {
	// Devices, Routes and Mirrors count live records: device
	// registrations, home routes and shadow routes.
	Devices, Routes, Mirrors int
	// Offline counts the messages the offline store holds.
	Offline int
	// Lookups counts the lookups answered since the supernode started.
	Lookups uint64
	// Clients counts live registrations by the platform and client
	// version their certificates declare.
	Clients map[Client]int
}

// Client is a platform and client version, as a certificate declares them.
type Client struct{ Platform, Version string }

// DirectoryStats counts the directory's live records, one pass under the
// lock (a scrape asks once; the cost is one look at every record).
func (s *Supernode) DirectoryStats() DirectoryStats {
	now := s.cfg.Now()
	st := DirectoryStats{Lookups: s.lookups.Load(), Clients: map[Client]int{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, devs := range s.devices {
		for _, rec := range devs {
			if now.Before(rec.Expires) && !s.revoked.Revoked(rec.Cert.PeerID) {
				st.Devices++
				st.Clients[Client{Platform: rec.Cert.Platform, Version: rec.Cert.ClientVersion}]++
			}
		}
	}
	for _, r := range s.routes {
		if r.Live(now) {
			st.Routes++
		}
	}
	for _, r := range s.mirrors {
		if r.Live(now) {
			st.Mirrors++
		}
	}
	for _, held := range s.offline {
		st.Offline += len(held)
	}
	return st
}
