package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// FerretDB 1.24 on SQLite does not apply a conditional update atomically: it reads the
// matching documents and then writes them, so two clients racing findAndModify on one
// filter can both succeed (MongoDB applies each to a document atomically). The catalogue's
// state machine relies on that atomicity, so every request is handed to FerretDB one at a
// time, with its reply, under one lock: each command then sees the one before it done.

const opMsgMoreToCome = 1 << 1

// serveSerialized accepts clients on listen and relays each request to the backend
// address, one request and its reply at a time across all clients.
func serveSerialized(listener net.Listener, backend string, logger *slog.Logger) error {
	var turn sync.Mutex
	for {
		client, err := listener.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer client.Close()
			server, err := net.Dial("unix", backend)
			if err != nil {
				logger.Warn("cannot reach FerretDB", "error", err)
				return
			}
			defer server.Close()
			if err := relay(client, server, &turn); err != nil && err != io.EOF {
				logger.Debug("connection ended", "error", err)
			}
		}()
	}
}

func relay(client, server net.Conn, turn *sync.Mutex) error {
	for {
		request, err := readMessage(client)
		if err != nil {
			return err
		}
		turn.Lock()
		reply, err := exchange(server, request)
		turn.Unlock()
		if err != nil {
			return err
		}
		if _, err := client.Write(reply); err != nil {
			return err
		}
	}
}

// exchange sends one request and reads its reply (none when the request says moreToCome).
func exchange(server net.Conn, request []byte) ([]byte, error) {
	if _, err := server.Write(request); err != nil {
		return nil, err
	}
	if moreToCome(request) {
		return nil, nil
	}
	return readMessage(server)
}

func moreToCome(message []byte) bool {
	const opMsg = 2013
	if len(message) < 20 || binary.LittleEndian.Uint32(message[12:16]) != opMsg {
		return false
	}
	return binary.LittleEndian.Uint32(message[16:20])&opMsgMoreToCome != 0
}

// readMessage reads one wire-protocol message: a little-endian int32 length, then the rest.
func readMessage(conn net.Conn) ([]byte, error) {
	var header [4]byte
	if _, err := io.ReadFull(conn, header[:]); err != nil {
		return nil, err
	}
	length := binary.LittleEndian.Uint32(header[:])
	if length < 16 || length > 48*1024*1024 {
		return nil, fmt.Errorf("message length %d out of range", length)
	}
	message := make([]byte, length)
	copy(message, header[:])
	if _, err := io.ReadFull(conn, message[4:]); err != nil {
		return nil, err
	}
	return message, nil
}
