// spdy-go-client drives crid's SPDY server with the Go client Kubernetes uses
// (github.com/moby/spdystream): it opens streams with headers, writes a payload, half-closes,
// reads the echo back and checks it, pings, and closes the connection. It prints "ok" and
// exits 0 when every check passed.
//
// Usage: spdy-go-client ADDRESS STREAMS PAYLOAD_BYTES
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/moby/spdystream"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fail("usage: %s ADDRESS STREAMS PAYLOAD_BYTES", os.Args[0])
	}
	streams, _ := strconv.Atoi(os.Args[2])
	size, _ := strconv.Atoi(os.Args[3])
	conn, err := net.Dial("tcp", os.Args[1])
	if err != nil {
		fail("dial: %v", err)
	}
	session, err := spdystream.NewConnection(conn, false)
	if err != nil {
		fail("session: %v", err)
	}
	go session.Serve(spdystream.NoOpStreamHandler)

	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- echo(session, i, size)
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			fail("%v", err)
		}
	}
	if _, err := session.Ping(); err != nil {
		fail("ping: %v", err)
	}
	if err := session.CloseWait(); err != nil {
		fail("close: %v", err)
	}
	fmt.Println("ok")
}

func echo(session *spdystream.Connection, i int, size int) error {
	header := http.Header{}
	header.Set("streamtype", "data")
	header.Set("requestid", strconv.Itoa(i))
	stream, err := session.CreateStream(header, nil, false)
	if err != nil {
		return fmt.Errorf("stream %d: create: %v", i, err)
	}
	if err := stream.Wait(); err != nil {
		return fmt.Errorf("stream %d: reply: %v", i, err)
	}
	payload := make([]byte, size)
	for n := range payload {
		payload[n] = byte(n*(i+1) + i)
	}
	go func() {
		// Written the way io.Copy does it: one DATA frame per 32 KiB.
		io.Copy(stream, bytes.NewReader(payload))
		stream.Close()
	}()
	got, err := io.ReadAll(stream)
	if err != nil {
		return fmt.Errorf("stream %d: read: %v", i, err)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("stream %d: echoed %d bytes, not the %d sent", i, len(got), len(payload))
	}
	return nil
}
