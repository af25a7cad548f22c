// gosse: a Go standard-library SSE server in the classic goroutine-per-connection style, the
// "plain Go" peer for tools/bench.sh (PEERS=1). Run with GOMAXPROCS=1.
//
//	GET  /events?topic=T   text/event-stream; one goroutine and one buffered channel per subscriber
//	POST /publish?topic=T  the body becomes one event, sent to every subscriber of T; 200 "ok"
//
// A subscriber whose channel is full is dropped (its connection closed), like a slow consumer.
// Prints "listening on ADDR" on stderr once it accepts.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
)

type subscriber struct {
	ch   chan []byte
	done chan struct{}
	once sync.Once
}

func (s *subscriber) drop() { s.once.Do(func() { close(s.done) }) }

type hub struct {
	mu     sync.Mutex
	topics map[string]map[*subscriber]struct{}
	nextID uint64
	queue  int
}

func (h *hub) add(topic string, s *subscriber) {
	h.mu.Lock()
	m := h.topics[topic]
	if m == nil {
		m = make(map[*subscriber]struct{})
		h.topics[topic] = m
	}
	m[s] = struct{}{}
	h.mu.Unlock()
}

func (h *hub) remove(topic string, s *subscriber) {
	h.mu.Lock()
	delete(h.topics[topic], s)
	h.mu.Unlock()
}

// publish encodes the event once and hands the same bytes to every subscriber's channel.
func (h *hub) publish(topic string, data []byte) {
	h.mu.Lock()
	h.nextID++
	ev := make([]byte, 0, len(data)+32)
	ev = append(ev, "id: "...)
	ev = strconv.AppendUint(ev, h.nextID, 10)
	ev = append(ev, "\ndata: "...)
	ev = append(ev, data...)
	ev = append(ev, "\n\n"...)
	for s := range h.topics[topic] {
		select {
		case s.ch <- ev:
		default:
			delete(h.topics[topic], s)
			s.drop()
		}
	}
	h.mu.Unlock()
}

func (h *hub) events(w http.ResponseWriter, r *http.Request) {
	topic := r.URL.Query().Get("topic")
	fl, ok := w.(http.Flusher)
	if topic == "" || !ok {
		http.Error(w, "topic required", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	s := &subscriber{ch: make(chan []byte, h.queue), done: make(chan struct{})}
	h.add(topic, s)
	defer h.remove(topic, s)
	ctx := r.Context()
	for {
		select {
		case ev := <-s.ch:
			if _, err := w.Write(ev); err != nil {
				return
			}
			// Write what is already queued before flushing, so a burst is one flush.
			for n := len(s.ch); n > 0; n-- {
				if _, err := w.Write(<-s.ch); err != nil {
					return
				}
			}
			fl.Flush()
		case <-s.done:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (h *hub) publishHandler(w http.ResponseWriter, r *http.Request) {
	topic := r.URL.Query().Get("topic")
	if r.Method != http.MethodPost || topic == "" {
		http.Error(w, "POST /publish?topic=T", http.StatusBadRequest)
		return
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.publish(topic, data)
	w.Header().Set("Content-Length", "2")
	io.WriteString(w, "ok")
}

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to listen on")
	queue := flag.Int("queue", 4096, "events buffered per subscriber before it is dropped")
	flag.Parse()
	h := &hub{topics: make(map[string]map[*subscriber]struct{}), queue: *queue}
	mux := http.NewServeMux()
	mux.HandleFunc("/events", h.events)
	mux.HandleFunc("/publish", h.publishHandler)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "listening on %s\n", ln.Addr())
	log.Fatal(http.Serve(ln, mux))
}
