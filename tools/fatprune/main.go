// Command fatprune shrinks what a CUDA shared library costs to carry by
// zeroing the device code for the GPU architectures it will not run on.
//
//	go run ./tools/fatprune -keep sm_90 -in libonnxruntime_providers_cuda.so -out pruned.so
//	go run ./tools/fatprune -check -in libonnxruntime_providers_cuda.so
//
// It finds the ELF sections that hold fatbin containers (.nv_fatbin, and
// __nv_relfatbin where present), walks every container and every entry in
// them, and overwrites with zeros the payload of each entry whose arch -keep
// does not name. Headers, the file's size and every offset stay as they were,
// so the ELF stays valid and the loader sees the same library; the zeroed
// runs compress to almost nothing. The CUDA driver picks one entry per
// container for the card it runs on and never reads the others.
//
// -keep lists sm_NN (the cards to run on; sm_90a is the same arch number as
// sm_90 in the entry header) and compute_NN (PTX for that virtual arch). A
// kept sm_XY keeps every ELF cubin that loads on such a card: the same
// major X and a minor no higher than Y (-keep sm_86 keeps sm_80 and sm_86
// cubins, not sm_89 or sm_90 ones; -keep sm_90 keeps sm_90 only). PTX is
// dropped unless named, or unless -ptx-jit keeps every PTX entry whose arch
// is at most the highest kept sm_NN (the driver could JIT it for such a
// card). A file fatprune cannot parse in full (unknown magic or entry kind,
// an entry running past its container, stray bytes) is refused and nothing
// is written; so is a -keep that keeps no entry at all, and so, unless
// -allow-empty, is one that leaves a container with no entry some kept
// sm_NN card can load when it had one for that card before (a cubin that
// runs there, or PTX the driver could JIT). Containers with nothing for a
// kept card to begin with (code built for sm_120 only, kept sm_90) are only
// counted.
package main

import (
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
)

// fatbinSections are the sections that hold fatbin containers.
var fatbinSections = map[string]bool{".nv_fatbin": true, "__nv_relfatbin": true}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fatprune:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("fatprune", flag.ContinueOnError)
	keep := fs.String("keep", "", "comma-separated archs to keep: sm_NN (cubins), compute_NN (PTX)")
	ptxJIT := fs.Bool("ptx-jit", false, "also keep PTX whose arch is at most the highest kept sm_NN")
	in := fs.String("in", "", "the shared library to read (required)")
	out := fs.String("out", "", "where to write the pruned library (required unless -check)")
	check := fs.Bool("check", false, "list the entries and what -keep would do; write nothing")
	verbose := fs.Bool("v", false, "with -check: one line per entry")
	allowEmpty := fs.Bool("allow-empty", false, "write even when a container loses every entry some kept sm_NN card could load")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *in == "" || (*out == "" && !*check) {
		return errors.New("need -in and -out (or -check)")
	}
	var k keepSet
	if *keep != "" || !*check {
		var err error
		if k, err = parseKeep(*keep, *ptxJIT); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	entries, rep, err := analyze(data, k)
	if err != nil {
		return fmt.Errorf("%s: %w", *in, err)
	}
	if *check && *verbose {
		printEntries(stdout, entries, k, *keep == "")
	}
	printReport(stdout, rep, *check && *keep == "")
	if *check {
		return nil
	}
	if rep.KeptEntries == 0 {
		return fmt.Errorf("%s: -keep %s keeps none of its %d entries; refusing to write", *in, *keep, len(entries))
	}
	if rep.LostContainer > 0 && !*allowEmpty {
		return fmt.Errorf("%s: -keep %s leaves %d containers with no entry a kept sm_NN card can load, which had one for it before (add -ptx-jit or compute_NN for their PTX, or -allow-empty); refusing to write", *in, *keep, rep.LostContainer)
	}
	for _, e := range entries {
		if !k.keeps(e) {
			clear(data[e.PayloadOff : e.PayloadOff+int64(e.PayloadSize)])
		}
	}
	// The same walk over the result must find the same entries: only
	// payloads changed.
	if again, _, err := analyze(data, k); err != nil || len(again) != len(entries) {
		return fmt.Errorf("the pruned image no longer parses the same (%d entries, was %d): %v", len(again), len(entries), err)
	}
	return writeFile(*in, *out, data)
}

// analyze parses the ELF and every fatbin container in it.
func analyze(data []byte, k keepSet) ([]entry, report, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, report{}, err
	}
	var entries []entry
	containers, sections := 0, 0
	var padding int64
	for _, s := range f.Sections {
		if !fatbinSections[s.Name] {
			continue
		}
		sections++
		if s.Type == elf.SHT_NOBITS {
			return nil, report{}, fmt.Errorf("section %s has no bytes in the file", s.Name)
		}
		if s.Offset > uint64(len(data)) || s.Size > uint64(len(data))-s.Offset {
			return nil, report{}, fmt.Errorf("section %s (offset %#x, size %#x) runs past the file's end", s.Name, s.Offset, s.Size)
		}
		es, nc, pad, err := parseSection(s.Name, data[s.Offset:s.Offset+s.Size], int64(s.Offset), containers)
		if err != nil {
			return nil, report{}, err
		}
		entries = append(entries, es...)
		containers += nc
		padding += pad
	}
	if sections == 0 {
		return nil, report{}, errors.New("no .nv_fatbin or __nv_relfatbin section")
	}
	return entries, summarize(entries, containers, padding, k), nil
}

func printEntries(w io.Writer, entries []entry, k keepSet, listOnly bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "section\tcontainer\toffset\tkind\tarch\tflags\tpayload\tuncompressed\taction\t")
	for _, e := range entries {
		action := "zero"
		switch {
		case listOnly:
			action = "-"
		case k.keeps(e):
			action = "keep"
		}
		fmt.Fprintf(tw, "%s\t%d\t%#x\t%s\t%s\t%#x\t%d\t%d\t%s\t\n", e.Section, e.Container, e.Offset, e.kindName(), e.archName(), e.Flags, e.PayloadSize, e.Raw, action)
	}
	tw.Flush()
}

func printReport(w io.Writer, r report, listOnly bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tarch\tentries\tcompressed\tbytes\taction\t")
	for _, rw := range r.Rows {
		action := "zero"
		switch {
		case listOnly:
			action = "-"
		case rw.Kept:
			action = "keep"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t\n", rw.Kind, rw.Arch, rw.Entries, rw.Compressed, rw.Bytes, action)
	}
	tw.Flush()
	fmt.Fprintf(w, "containers %d, padding %d bytes\n", r.Containers, r.Padding)
	if listOnly {
		return
	}
	fmt.Fprintf(w, "kept   %d entries, %d bytes\nzeroed %d entries, %d bytes\n", r.KeptEntries, r.KeptBytes, r.ZeroedEntries, r.ZeroedBytes)
	if r.EmptyContainer > 0 {
		fmt.Fprintf(w, "note: %d containers keep no entry: the code in them cannot load on a kept arch\n", r.EmptyContainer)
	}
	if r.LostContainer > 0 {
		fmt.Fprintf(w, "lost: %d containers had an entry a kept sm_NN card could load and keep none for it\n", r.LostContainer)
	}
}

// writeFile writes data beside out and renames it into place, with in's
// permission bits.
func writeFile(in, out string, data []byte) error {
	mode := os.FileMode(0o644)
	if st, err := os.Stat(in); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".*.partial")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
