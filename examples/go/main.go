// Command go-client is a Sluice client in Go: it submits a small batch, prints its progress
// as the server streams it, then reads the results.
//
// Run it with examples/go/run, which generates the stubs (package sluicev1, in gen/) from
// proto/ with buf, protoc-gen-go and protoc-gen-go-grpc. The server is $SLUICE_SERVER
// (default http://127.0.0.1:50051).
//
// It follows the proto's retry advice: the request carries an idempotency_key, so resending
// it after UNAVAILABLE cannot create a second batch, and a progress stream that breaks is
// resumed with WatchBatch from the last sequence seen, without gaps or duplicates.
//
// Exit status: 0 if the batch SUCCEEDED with one result per item; 3 if it FAILED, 4 if it
// was CANCELLED, 1 for a result count that does not match or another error, 5 if the server
// stays unreachable (the same codes as the sluice CLI).
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	sluicev1 "example.invalid/sluice/examples/go/gen/sluice/v1"
)

var sentences = []string{
	"to be or not to be",
	"that is the question",
	"whether tis nobler in the mind to suffer",
	"the slings and arrows of outrageous fortune",
}

const (
	maxAttempts = 5
	callTimeout = 2 * time.Minute
)

func main() {
	os.Exit(run())
}

func run() int {
	server := os.Getenv("SLUICE_SERVER")
	if server == "" {
		server = "http://127.0.0.1:50051"
	}
	conn, err := dial(server)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bad SLUICE_SERVER %q: %v\n", server, err)
		return 1
	}
	defer conn.Close()
	client := sluicev1.NewBatchServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	request := &sluicev1.SubmitBatchRequest{
		Task:           "wordcount",
		ChunkSize:      proto.Uint32(2),
		IdempotencyKey: "go-example-" + rand.Text(),
	}
	for _, sentence := range sentences {
		request.Items = append(request.Items, &sluicev1.Payload{
			Kind: &sluicev1.Payload_Text{Text: sentence},
		})
	}
	last, err := submitAndFollow(ctx, client, request)
	var results []*sluicev1.ListResultsResponse
	if err == nil {
		results, err = listResults(ctx, client, last.GetBatchId())
	}
	if err != nil {
		if status.Code(err) == codes.Unavailable {
			fmt.Fprintf(os.Stderr, "cannot reach the Sluice server at %s (%s); start one "+
				"(dev/stack up, then sluice-server and sluice-worker) or set SLUICE_SERVER\n",
				server, status.Convert(err).Message())
			return 5
		}
		fmt.Fprintf(os.Stderr, "the server said %s: %s\n", status.Code(err),
			status.Convert(err).Message())
		return 1
	}

	for _, result := range results {
		switch outcome := result.GetOutcome().(type) {
		case *sluicev1.ListResultsResponse_Output:
			fmt.Printf("%d\tok\t%s\n", result.GetIndex(), outcome.Output.GetText())
		case *sluicev1.ListResultsResponse_Error:
			fmt.Printf("%d\terror\t%s\n", result.GetIndex(), outcome.Error)
		}
	}
	total := last.GetCounters().GetItemsTotal()
	fmt.Printf("batch %s %s: %d results for %d items\n", last.GetBatchId(),
		stateName(last.GetState()), len(results), total)
	switch {
	case last.GetState() == sluicev1.BatchState_BATCH_STATE_FAILED:
		return 3
	case last.GetState() == sluicev1.BatchState_BATCH_STATE_CANCELLED:
		return 4
	case uint64(len(results)) != total:
		return 1
	}
	return 0
}

// dial opens a client connection to http://host:port (plaintext), https://host:port or
// host:port.
func dial(server string) (*grpc.ClientConn, error) {
	if target, ok := strings.CutPrefix(server, "https://"); ok {
		creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
		return grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	}
	target := strings.TrimPrefix(server, "http://")
	return grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// eventStream is what SubmitBatch and WatchBatch both return: a stream of events.
type eventStream interface {
	Recv() (*sluicev1.BatchEvent, error)
}

type submitStream struct {
	grpc.ServerStreamingClient[sluicev1.SubmitBatchResponse]
}

func (s submitStream) Recv() (*sluicev1.BatchEvent, error) {
	response, err := s.ServerStreamingClient.Recv()
	return response.GetEvent(), err
}

type watchStream struct {
	grpc.ServerStreamingClient[sluicev1.WatchBatchResponse]
}

func (s watchStream) Recv() (*sluicev1.BatchEvent, error) {
	response, err := s.ServerStreamingClient.Recv()
	return response.GetEvent(), err
}

// submitAndFollow calls SubmitBatch, printing every event, and returns the terminal one. An
// UNAVAILABLE stream is retried with backoff: before the first event by resending the request
// (the idempotency key makes that safe), after it by WatchBatch from the last sequence seen.
func submitAndFollow(
	ctx context.Context,
	client sluicev1.BatchServiceClient,
	request *sluicev1.SubmitBatchRequest,
) (*sluicev1.BatchEvent, error) {
	var last *sluicev1.BatchEvent
	failures := 0
	for {
		err := follow(ctx, client, request, &last)
		if err == nil {
			return last, nil
		}
		failures++
		if status.Code(err) != codes.Unavailable || failures >= maxAttempts {
			return nil, err
		}
		backoff := time.Duration(500<<(failures-1)) * time.Millisecond
		fmt.Fprintf(os.Stderr, "stream unavailable (%s); retrying in %s\n",
			status.Convert(err).Message(), backoff)
		time.Sleep(backoff)
	}
}

// follow opens one stream (SubmitBatch if no event was seen yet, else WatchBatch after the
// last one) and prints its events into *last until the terminal one.
func follow(
	ctx context.Context,
	client sluicev1.BatchServiceClient,
	request *sluicev1.SubmitBatchRequest,
	last **sluicev1.BatchEvent,
) error {
	var events eventStream
	if *last == nil {
		stream, err := client.SubmitBatch(ctx, request)
		if err != nil {
			return err
		}
		events = submitStream{stream}
	} else {
		stream, err := client.WatchBatch(ctx, &sluicev1.WatchBatchRequest{
			BatchId:       (*last).GetBatchId(),
			AfterSequence: (*last).GetSequence(),
		})
		if err != nil {
			return err
		}
		events = watchStream{stream}
	}
	for {
		event, err := events.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("the event stream ended before the batch finished")
		}
		if err != nil {
			return err
		}
		*last = event
		show(event)
		if isTerminal(event.GetState()) {
			return nil
		}
	}
}

func listResults(
	ctx context.Context,
	client sluicev1.BatchServiceClient,
	batchID string,
) ([]*sluicev1.ListResultsResponse, error) {
	stream, err := client.ListResults(ctx, &sluicev1.ListResultsRequest{BatchId: batchID})
	if err != nil {
		return nil, err
	}
	var results []*sluicev1.ListResultsResponse
	for {
		result, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return results, nil
		}
		if err != nil {
			return nil, err
		}
		results = append(results, result)
	}
}

func isTerminal(state sluicev1.BatchState) bool {
	switch state {
	case sluicev1.BatchState_BATCH_STATE_SUCCEEDED,
		sluicev1.BatchState_BATCH_STATE_FAILED,
		sluicev1.BatchState_BATCH_STATE_CANCELLED:
		return true
	}
	return false
}

func stateName(state sluicev1.BatchState) string {
	return strings.TrimPrefix(state.String(), "BATCH_STATE_")
}

func show(event *sluicev1.BatchEvent) {
	counters := event.GetCounters()
	done := counters.GetItemsSucceeded() + counters.GetItemsFailed()
	fmt.Printf("seq=%d state=%s items=%d/%d failed=%d chunks=%d/%d\n", event.GetSequence(),
		stateName(event.GetState()), done, counters.GetItemsTotal(), counters.GetItemsFailed(),
		counters.GetChunksDone(), counters.GetChunksTotal())
}
