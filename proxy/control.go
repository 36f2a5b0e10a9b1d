package proxy

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
)

const maxControlBody = 64 << 10

// Handler returns the HTTP control API of p. Bodies and replies are JSON
// (see Faults.MarshalJSON); errors are 400 or 404 with a text message.
//
//	GET    /faults             the faults in force
//	PUT    /faults             replace them (absent fields become zero)
//	PATCH  /faults             change only the fields given
//	GET    /stats              counters (Stats)
//	GET    /conns              open connections (ConnInfo)
//	PUT    /conns/{id}/faults  give one connection its own faults
//	DELETE /conns/{id}/faults  make it follow the proxy's faults again
func (p *Proxy) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, p.Faults())
	})
	mux.HandleFunc("PUT /faults", func(w http.ResponseWriter, r *http.Request) {
		f, ok := readFaults(w, r, Faults{})
		if !ok {
			return
		}
		if err := p.SetFaults(f); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, p.Faults())
	})
	mux.HandleFunc("PATCH /faults", func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r)
		if !ok {
			return
		}
		var decodeErr error
		if err := p.UpdateFaults(func(f Faults) Faults {
			nf := f
			if decodeErr = json.Unmarshal(body, &nf); decodeErr != nil {
				return f
			}
			return nf
		}); err != nil || decodeErr != nil {
			http.Error(w, errors.Join(decodeErr, err).Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, p.Faults())
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, p.Stats())
	})
	mux.HandleFunc("GET /conns", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, p.Conns())
	})
	mux.HandleFunc("PUT /conns/{id}/faults", func(w http.ResponseWriter, r *http.Request) {
		id, ok := connIDParam(w, r)
		if !ok {
			return
		}
		f, ok := readFaults(w, r, Faults{})
		if !ok {
			return
		}
		if err := p.SetConnFaults(id, f); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, f)
	})
	mux.HandleFunc("DELETE /conns/{id}/faults", func(w http.ResponseWriter, r *http.Request) {
		id, ok := connIDParam(w, r)
		if !ok {
			return
		}
		if err := p.ClearConnFaults(id); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func connIDParam(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "connection id: "+err.Error(), http.StatusBadRequest)
		return 0, false
	}
	return id, true
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxControlBody))
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return nil, false
	}
	return body, true
}

// readFaults decodes the request body onto base.
func readFaults(w http.ResponseWriter, r *http.Request, base Faults) (Faults, bool) {
	body, ok := readBody(w, r)
	if !ok {
		return base, false
	}
	if err := json.Unmarshal(body, &base); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return base, false
	}
	return base, true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
