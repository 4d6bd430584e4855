// An HTTPS/1.1 server on Go's standard library (crypto/tls, net/http), for the end-to-end
// tests. Usage: go_https PORT CERT KEY. Prints "ready PORT" once listening.
// Routes: /slow answers after 20 ms, /status/<code>, POST /echo (201, the body's size),
// anything else 200 "hello". HTTP/2 is switched off: the agent reads HTTP/1.x.
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func send(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	io.WriteString(w, body)
}

func handle(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost:
		n, _ := io.Copy(io.Discard, r.Body)
		send(w, http.StatusCreated, strconv.FormatInt(n, 10))
	case r.URL.Path == "/slow":
		time.Sleep(20 * time.Millisecond)
		send(w, http.StatusOK, "slow")
	case strings.HasPrefix(r.URL.Path, "/status/"):
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if err != nil {
			code = http.StatusBadRequest
		}
		send(w, code, "status")
	default:
		send(w, http.StatusOK, "hello")
	}
}

func main() {
	port, cert, key := os.Args[1], os.Args[2], os.Args[3]
	listener, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := &http.Server{
		Handler:      http.HandlerFunc(handle),
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	fmt.Printf("ready %d\n", listener.Addr().(*net.TCPAddr).Port)
	if err := server.ServeTLS(listener, cert, key); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
