// Command lambda-os-ferretdb serves the MongoDB wire protocol on a loopback port with
// FerretDB's SQLite backend: the catalogue server of the test suites and of the default
// standalone set-up. It embeds FerretDB as a library (github.com/FerretDB/FerretDB/ferretdb)
// because `go install .../cmd/ferretdb@v1.24.2` builds a binary that refuses to start: the
// module as published lacks the build/version/version.txt that FerretDB's own build writes.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to serve the MongoDB wire protocol on")
	dir := flag.String("sqlite-dir", "/var/lib/lambda-os/ferretdb", "directory holding one SQLite file per database")
	level := flag.String("log-level", "warn", "log level: debug, info, warn or error")
	flag.Parse()

	var logLevel slog.Level
	if err := logLevel.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "bad --log-level %q: %v\n", *level, err)
		os.Exit(2)
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "cannot create %s: %v\n", *dir, err)
		os.Exit(1)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))

	// FerretDB itself listens on a Unix socket of ours; clients reach it through the
	// serializing relay on the TCP address (serialize.go says why).
	socket := filepath.Join(*dir, "ferretdb.sock")
	_ = os.Remove(socket)
	server, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{Unix: socket},
		Handler:   "sqlite",
		SQLiteURL: "file:" + *dir + "/",
		Logger:    logger,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot start FerretDB: %v\n", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot listen on %s: %v\n", *listen, err)
		os.Exit(1)
	}
	go func() {
		<-ctx.Done()
		listener.Close()
	}()
	go func() {
		if err := serveSerialized(listener, socket, logger); err != nil && ctx.Err() == nil {
			fmt.Fprintf(os.Stderr, "relay stopped: %v\n", err)
			os.Exit(1)
		}
	}()
	logger.Info("serving", "address", *listen, "sqlite", *dir)
	if err := server.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "FerretDB stopped: %v\n", err)
		os.Exit(1)
	}
}
