// An HTTP server that runs under relaunch (or systemd socket activation). Go's standard
// library only.
//
// It answers every request with "pid=<pid> lang=go". See README.md beside this file.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// listenFdsStart is the first socket passed by socket activation (SD_LISTEN_FDS_START).
const listenFdsStart = 3

// stopGrace is how long a stop waits for the requests in flight.
const stopGrace = 8 * time.Second

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go-example: "+format+"\n", args...)
	os.Exit(1)
}

// inheritedListener takes the first inherited socket: fd 3, ours only if LISTEN_PID is our pid.
func inheritedListener() (net.Listener, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, errors.New("no socket inherited (LISTEN_PID is not this process): run me under relaunch")
	}
	if n, err := strconv.Atoi(os.Getenv("LISTEN_FDS")); err != nil || n < 1 {
		return nil, errors.New("no socket inherited (LISTEN_FDS is unset or 0)")
	}
	// With several sockets, find the one you want by its name in LISTEN_FDNAMES
	// (colon-separated, in fd order from 3).
	file := os.NewFile(listenFdsStart, "listener")
	// FileListener works on a duplicate of the fd and makes it non-blocking (the flag is on
	// the shared socket, so a blocking socket from the launcher is fine).
	listener, err := net.FileListener(file)
	file.Close()
	return listener, err
}

// notifyReady sends READY=1 to $NOTIFY_SOCKET (relaunch --ready notify, systemd
// Type=notify); Go's net package reads a leading '@' as an abstract socket.
func notifyReady() error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte("READY=1"))
	return err
}

func main() {
	// Catch SIGTERM and SIGINT first, so a stop during start-up ends us cleanly too.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	listener, err := inheritedListener()
	if err != nil {
		fail("%v", err)
	}
	body := fmt.Sprintf("pid=%d lang=go\n", os.Getpid())
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			fmt.Fprint(w, body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()

	// Connections that arrive before Serve accepts wait in the queue: we can say READY=1 now.
	if err := notifyReady(); err != nil {
		fail("sending READY=1 to NOTIFY_SOCKET: %v", err)
	}
	fmt.Fprintf(os.Stderr, "go-example: pid %d serving\n", os.Getpid())

	select {
	case err := <-served:
		fail("serving: %v", err)
	case <-stop:
	}
	// Shutdown closes the listener (close, never shutdown(): relaunch and the next generation
	// share the socket), closes idle connections and waits for the requests in flight.
	ctx, cancel := context.WithTimeout(context.Background(), stopGrace)
	defer cancel()
	if err := server.Shutdown(ctx); err != nil {
		fail("stopping: %v", err)
	}
	fmt.Fprintf(os.Stderr, "go-example: pid %d stopped\n", os.Getpid())
}
