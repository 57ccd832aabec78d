package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/nhscrypt/nhscrypt/backup"
)

// checksumError is a stored checksum that differs from the one computed
// locally: the object went wrong on the way or at rest. It is transient (a
// new upload may well succeed).
type checksumError struct{ what, want, got string }

func (e *checksumError) Error() string {
	return fmt.Sprintf("the server stored %s with SHA-256 %s, expected %s", e.what, e.got, e.want)
}
func (e *checksumError) Transient() bool { return true }

// acquire waits for an upload slot and returns a buffer of n bytes (n ≤
// PartSize); release gives both back.
func (b *Backend) acquire(ctx context.Context, n int) ([]byte, error) {
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if n < b.partSize {
		return make([]byte, n), nil
	}
	select {
	case buf := <-b.free:
		return buf, nil
	default:
		return make([]byte, b.partSize), nil
	}
}

func (b *Backend) release(buf []byte) {
	if cap(buf) == b.partSize {
		select {
		case b.free <- buf[:b.partSize]:
		default:
		}
	}
	<-b.slots
}

// partReader reads the object stream in parts, looking one byte ahead so
// it knows whether a full part was the last.
type partReader struct {
	ctx   context.Context
	r     io.Reader
	whole hash.Hash
	n     int64
	carry []byte
	eof   bool
}

// fill reads into buf until it is full or the stream ends.
func (p *partReader) fill(buf []byte) (int, error) {
	n := copy(buf, p.carry)
	p.carry = p.carry[:0]
	for n < len(buf) && !p.eof {
		if err := p.ctx.Err(); err != nil {
			return 0, err
		}
		m, err := p.r.Read(buf[n:])
		n += m
		if err == io.EOF {
			p.eof = true
		} else if err != nil {
			return 0, err
		}
	}
	if !p.eof {
		var one [1]byte
		for {
			if err := p.ctx.Err(); err != nil {
				return 0, err
			}
			m, err := p.r.Read(one[:])
			if m == 1 {
				p.carry = append(p.carry, one[0])
				break
			}
			if err == io.EOF {
				p.eof = true
				break
			}
			if err != nil {
				return 0, err
			}
		}
	}
	p.whole.Write(buf[:n])
	p.n += int64(n)
	return n, nil
}

// upload stores the object: one PUT when it fits in a part, else a
// multipart upload.
func (b *Backend) upload(ctx context.Context, h backup.Handle, size int64, r io.Reader) error {
	key := b.Key(h)
	pr := &partReader{ctx: ctx, r: r, whole: sha256.New()}
	first := b.partSize
	if size >= 0 && size < int64(b.partSize) {
		first = int(size)
	}
	buf, err := b.acquire(ctx, first)
	if err != nil {
		return err
	}
	n, err := pr.fill(buf)
	if err != nil {
		b.release(buf)
		return err
	}
	if pr.eof {
		defer b.release(buf)
		if err := b.checkWhole(h, size, pr); err != nil {
			return err
		}
		return b.putSingle(ctx, key, buf[:n])
	}
	if size >= 0 && size < int64(b.partSize) {
		b.release(buf)
		return fmt.Errorf("the reader holds more than the %d bytes announced", size)
	}
	return b.putMultipart(ctx, h, key, size, pr, buf, n)
}

// checkWhole checks the stream's length, and for a content-named object
// its SHA-256, before the object is made visible.
func (b *Backend) checkWhole(h backup.Handle, size int64, pr *partReader) error {
	if size >= 0 && pr.n != size {
		return fmt.Errorf("read %d bytes, expected %d", pr.n, size)
	}
	if contentNamed(h) {
		if got := hex.EncodeToString(pr.whole.Sum(nil)); got != h.Name {
			return fmt.Errorf("content has SHA-256 %s, not the %s it is named by: not stored", got, h.Name)
		}
	}
	return nil
}

func (b *Backend) putOptions() minio.PutObjectOptions {
	opts := minio.PutObjectOptions{
		StorageClass:         b.opts.StorageClass,
		DisableContentSha256: true, // sign the payload's SHA-256, not streaming chunks
		UserMetadata:         map[string]string{},
	}
	if rt := b.opts.Retention; rt != nil {
		opts.Mode = minio.RetentionMode(rt.Mode)
		opts.RetainUntilDate = rt.until(time.Now())
	}
	return opts
}

// putSingle stores data in one PUT, signed over its SHA-256 and carrying
// it as x-amz-checksum-sha256, and checks the checksum the server stored.
func (b *Backend) putSingle(ctx context.Context, key string, data []byte) error {
	sum := sha256.Sum256(data)
	b64 := base64.StdEncoding.EncodeToString(sum[:])
	opts := b.putOptions()
	opts.UserMetadata["x-amz-checksum-sha256"] = b64
	opts.UserMetadata["x-amz-sdk-checksum-algorithm"] = "SHA256"
	info, err := b.core.PutObject(ctx, b.bucket, key, bytes.NewReader(data), int64(len(data)), "", hex.EncodeToString(sum[:]), opts)
	if err != nil {
		return err
	}
	return b.checkStored(ctx, key, info, b64, "the object")
}

// checkStored compares the SHA-256 the server reports for what it stored
// with want; a server that reports none in the reply is asked with a HEAD
// (checksum mode), and one that never reports any is taken on the
// signed-payload check alone.
func (b *Backend) checkStored(ctx context.Context, key string, info minio.UploadInfo, want, what string) error {
	got := info.ChecksumSHA256
	if got == "" {
		st, err := b.core.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{VersionID: info.VersionID, Checksum: true})
		if err != nil {
			return err
		}
		got = st.ChecksumSHA256
	}
	if got == "" {
		return nil
	}
	if base, _, ok := strings.Cut(want, "-"); ok && !strings.Contains(got, "-") {
		want = base // a server that leaves off the part count
	}
	if got != want {
		// The upload completed but is wrong: try not to leave it.
		b.core.RemoveObject(context.WithoutCancel(ctx), b.bucket, key, minio.RemoveObjectOptions{VersionID: info.VersionID})
		return &checksumError{what: what, want: want, got: got}
	}
	return nil
}

// putMultipart uploads the stream in parts, first holding the first part
// (n bytes of buf), up to Concurrency parts at a time, then completes the
// upload once every part's stored SHA-256 matched and the stream's length
// (and name) checked out; on any failure it aborts the upload.
func (b *Backend) putMultipart(ctx context.Context, h backup.Handle, key string, size int64, pr *partReader, buf []byte, n int) (err error) {
	opts := b.putOptions()
	opts.UserMetadata["x-amz-checksum-algorithm"] = "SHA256"
	opts.UserMetadata["x-amz-checksum-type"] = "COMPOSITE"
	uploadID, err := b.core.NewMultipartUpload(ctx, b.bucket, key, opts)
	if err != nil {
		b.release(buf)
		return err
	}
	defer func() {
		if err != nil {
			// Abort even when ctx is cancelled, but not for long.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			b.core.AbortMultipartUpload(actx, b.bucket, key, uploadID)
		}
	}()

	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		parts    []minio.CompletePart
		sums     [][sha256.Size]byte
	)
	setErr := func(e error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = e
			cancel()
		}
		mu.Unlock()
	}
	send := func(num int, data []byte) {
		defer wg.Done()
		defer b.release(data)
		sum := sha256.Sum256(data)
		b64 := base64.StdEncoding.EncodeToString(sum[:])
		hdr := http.Header{}
		hdr.Set("x-amz-checksum-sha256", b64)
		hdr.Set("x-amz-sdk-checksum-algorithm", "SHA256")
		part, err := b.core.PutObjectPart(pctx, b.bucket, key, uploadID, num, bytes.NewReader(data), int64(len(data)),
			minio.PutObjectPartOptions{Sha256Hex: hex.EncodeToString(sum[:]), CustomHeader: hdr, DisableContentSha256: true})
		if err == nil && part.ChecksumSHA256 != "" && part.ChecksumSHA256 != b64 {
			err = &checksumError{what: fmt.Sprintf("part %d", num), want: b64, got: part.ChecksumSHA256}
		}
		if err != nil {
			setErr(err)
			return
		}
		mu.Lock()
		for len(parts) < num {
			parts = append(parts, minio.CompletePart{})
			sums = append(sums, [sha256.Size]byte{})
		}
		parts[num-1] = minio.CompletePart{PartNumber: num, ETag: part.ETag, ChecksumSHA256: b64}
		sums[num-1] = sum
		mu.Unlock()
	}

	num := 1
	wg.Add(1)
	go send(num, buf[:n])
	for !pr.eof {
		if pctx.Err() != nil {
			break
		}
		if num == 10000 {
			setErr(fmt.Errorf("object larger than 10000 parts of %d bytes", b.partSize))
			break
		}
		buf, aerr := b.acquire(pctx, b.partSize)
		if aerr != nil {
			setErr(aerr)
			break
		}
		n, rerr := pr.fill(buf)
		if rerr != nil {
			b.release(buf)
			setErr(rerr)
			break
		}
		if n == 0 {
			b.release(buf)
			break
		}
		num++
		wg.Add(1)
		go send(num, buf[:n])
	}
	wg.Wait()
	if firstErr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return firstErr
	}
	if err := b.checkWhole(h, size, pr); err != nil {
		return err
	}
	composite := sha256.New()
	for i, p := range parts {
		if p.PartNumber != i+1 {
			return fmt.Errorf("part %d missing", i+1)
		}
		composite.Write(sums[i][:])
	}
	want := base64.StdEncoding.EncodeToString(composite.Sum(nil))
	info, err := b.core.CompleteMultipartUpload(ctx, b.bucket, key, uploadID, parts, minio.PutObjectOptions{})
	if err != nil {
		return err
	}
	// The composite checksum is reported as BASE64-N (N parts).
	return b.checkStored(ctx, key, info, want+"-"+strconv.Itoa(len(parts)), "the object (composite of its parts)")
}
