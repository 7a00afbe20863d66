#!/usr/bin/env bash
# Ferries what the GPU image run (bench/gpu/images.sh) needs to the device
# machine, which has no Go toolchain, no network and accepts at most 64 MiB
# per call (working tree + carried paths). See bench/gpu/IMAGES.md.
#
#   ferry.sh stage    here: build into bench/gpu/stage/ (git-ignored)
#                       bin/falocal   (-tags cuda), bin/falbench
#                       store/        manifests + blobs of the image models
#                       assets/       the test photographs falbench sends
#                       wheels/       the peer's wheels (wheels-images.txt)
#                     beside ort/, which bench/gpu/provider.sh writes (ONNX
#                     Runtime's GPU build); stage never touches ort/.
#   ferry.sh pack     here: tar + xz the stage, split it into
#                     bench/gpu/ferry/partNN/ (git-ignored), each small enough
#                     to travel beside the slim working tree; prints the calls.
#   ferry.sh aside    here: move the large tracked */testdata dirs into
#                     bench/gpu/aside/ so the tree that travels is small.
#   ferry.sh back     here: move them back (safe to run twice).
#   ferry.sh size     here: print the travelling tree's size.
#   ferry.sh unpack   ON THE DEVICE: keep the parts that came with this call
#                     in $FERRY_WORK/parts, and once all are there join them,
#                     check SHA-256s and extract into $FERRY_WORK/stage
#                     (idempotent). Exit 0 when the parts it saw were good
#                     (complete or not), 1 on a bad part or archive.
#
# Env: FERRY_WORK (device work dir, default /root/falocal-gpu, or
# $TMPDIR/falocal-gpu when /root is not writable), FERRY_MODELS (models to
# stage; the -fp16 variants are taken when installed), FALOCAL_DATA_DIR
# (store to copy from, default ~/.local/share/falocal), FERRY_PART_MIB
# (part size; default 64 MiB - slim tree - FERRY_MARGIN_MIB (4)),
# FERRY_XZ (xz options, default "-9e -T2"), FERRY_DICT (128MiB), FERRY_BLOCK
# (256MiB), FERRY_DERIVE (1: have unpack convert the -fp16 models not
# installed here).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
gpu=bench/gpu
stage=$gpu/stage
ferry=$gpu/ferry
aside=$gpu/aside
mib=1048576

# The tracked test-data dirs that leave the tree for a run (each over 1 MiB;
# the rest of */testdata is under 1 MiB in all). `ferry.sh aside` recomputes
# the list and refuses to go on if a new large one appeared.
big_testdata=(pipelines/diffusion/testdata pipelines/whisper/testdata pipelines/diffusion/tokenizer/testdata)

die() { echo "ferry.sh: $*" >&2; exit 1; }

# tree_bytes: what the device tool copies: tracked files that exist plus
# untracked files git does not ignore (as build.sh counts).
tree_bytes() {
	{ git ls-files -z; git ls-files -z --others --exclude-standard; } |
		{ xargs -0 stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}'
}

# testdata_dirs: every tracked */testdata dir with its tracked bytes.
testdata_dirs() {
	git ls-files -z | { xargs -0 stat -c '%s %n' 2>/dev/null || true; } | awk '
	{ n = index($2, "/testdata/"); if (n) s[substr($2, 1, n + 8)] += $1 }
	END { for (d in s) print s[d], d }' | sort -rn
}

slim_bytes() {
	local t a=0 d b
	t=$(tree_bytes)
	for d in "${big_testdata[@]}"; do
		[[ -d $d ]] || continue
		b=$(git ls-files -z -- "$d" | { xargs -0 stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
		a=$((a + b))
	done
	echo $((t - a))
}

cmd_size() {
	local t
	t=$(tree_bytes)
	awk -v t="$t" -v m=$mib 'BEGIN { printf "travelling tree: %.2f MiB (tracked files present + untracked not ignored)\n", t/m }'
	local left
	left=$(for d in "${big_testdata[@]}"; do if [[ -d $d ]]; then echo "$d"; fi; done)
	if [[ -n $left ]]; then
		echo "  still in the tree: $(echo $left) (ferry.sh aside moves them out)"
	fi
}

# ---------------------------------------------------------------- stage
cmd_stage() {
	local data=${FALOCAL_DATA_DIR:-$HOME/.local/share/falocal}
	local assets=${FALOCAL_ASSETS:-$HOME/.cache/falocal/testdata}
	local models=${FERRY_MODELS:-isnet-general-use realesrgan-x4plus realesrgan-x4fast}
	mkdir -p "$stage"
	# Only what stage owns is rebuilt: ort/ belongs to provider.sh.
	rm -rf "$stage"/{bin,store,assets,wheels}
	mkdir -p "$stage"/{bin,store/manifests,store/blobs,assets,wheels}

	echo "== binaries"
	eval "$(bash tools/cuda-headers/check.sh --env)"
	export CGO_CFLAGS CGO_LDFLAGS
	go build -tags cuda -trimpath -ldflags='-s -w' -o "$stage/bin/falocal" ./cmd/falocal
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$stage/bin/falbench" ./bench/falbench
	git rev-parse HEAD >"$stage/bin/COMMIT"
	git status --porcelain -- cmd engine api pipelines kernels weights internal bench/falbench |
		sed 's/^/dirty: /' >>"$stage/bin/COMMIT"

	echo "== models from $data"
	local m f want=()
	for m in $models; do want+=("$m" "$m-fp16"); done
	want+=(isnet-general-use-fp32)
	for m in "${want[@]}"; do
		f=$data/manifests/$m.json
		if [[ ! -f $f ]]; then
			[[ $m == *-fp16 || $m == *-fp32 ]] && { echo "  $m: not installed (optional)"; continue; }
			die "$m is not installed in $data (falocal weights install $m)"
		fi
		cp "$f" "$stage/store/manifests/"
		python3 -c 'import json,sys; [print(x["sha256"], x["size"]) for x in json.load(open(sys.argv[1]))["files"]]' "$f" |
			while read -r sum size; do
				local blob=$data/blobs/sha256-$sum
				[[ -f $blob ]] || die "$m: blob $sum missing"
				[[ $(stat -c %s "$blob") == "$size" ]] || die "$m: blob $sum has the wrong size"
				cp --reflink=auto "$blob" "$stage/store/blobs/"
			done
		echo "  $m"
	done
	(cd "$stage/store/blobs" && for b in sha256-*; do
		echo "${b#sha256-}  $b"
	done | sha256sum -c --quiet) || die "a copied blob does not match its name"

	# The -fp16 variants not installed here are derived on the device from
	# their fp32 siblings (weights.Float16Compute, as 'weights install' does,
	# checked against the catalog's pins): no bytes to carry for them.
	local need_derive=0
	for m in $models; do
		[[ -f $stage/store/manifests/$m-fp16.json ]] || need_derive=1
	done
	[[ -f $stage/store/manifests/isnet-general-use-fp32.json ]] || need_derive=1
	if ((need_derive)) && [[ ${FERRY_DERIVE:-1} == 1 ]]; then
		echo "== the -fp16/-fp32 variants: converted on the device (falocal weights convert)"
		echo "$fp16_pins" >"$stage/bin/fp16-pins"
	fi

	echo "== test photographs from $assets"
	local img
	for img in astronaut.png coffee.png chelsea.png; do
		cp "$assets/$img" "$stage/assets/" || die "missing $assets/$img (make test-assets)"
	done

	echo "== wheels (bench/gpu/wheels-images.txt)"
	fetch_wheels
	cp "$gpu"/wheels/*.whl "$stage/wheels/"
	cp "$gpu/wheels-images.txt" "$stage/wheels/"

	if [[ ! -f $stage/ort/libonnxruntime.so.1.30.0 ]]; then
		echo "WARNING: $stage/ort/ has no libonnxruntime.so.1.30.0: run bench/gpu/provider.sh before pack" >&2
	fi
	echo "== stage"
	(cd "$stage" && find . -type f -printf '%s %p\n' | sort -k2) |
		awk -v m=$mib '{printf "  %8.2f MiB  %s\n", $1/m, $2; s += $1} END {printf "  %8.2f MiB  in all\n", s/m}'
}

# The catalog's pins of the variants (weights/catalog.go isnetVariants,
# weights/upscale.go ncnnFP16): what Float16Compute (-fp16) or
# Float32Compute (-fp32) of the installed file gives.
fp16_pins="isnet-general-use-fp16=cfadb9760e2308e9f795e492237c0fba3a1b1a21b70f15c88cb3af0a370190a0
isnet-general-use-fp32=f9a1956fc936d1d48d0ad97107466a7d7d0a530402fbb69717b56b6fa9ce7905
realesrgan-x4plus-fp16=05099e6c74cb365ddebdb1a324c0dca9d2fffccc690e5c3e6b8ddfb6b4e5dfcf
realesrgan-x4fast-fp16=248f8c05153680156920dabbc28488fdea5bd278c69cf552e5fa85fd284da498"


# derive_fp16 STORE FALOCAL PINS: on the device, every BASE-fp16 (and -fp32)
# of the pins file whose base the store has and whose variant it lacks,
# converted with 'falocal weights convert' (the conversion 'weights install'
# runs) and checked against the catalog's pin.
derive_fp16() {
	local dir=$1 bin=$2 pins=$3 v pin base prec sum
	[[ -f $pins ]] || return 0
	while IFS== read -r v pin; do
		[[ -n $v ]] || continue
		base=${v%-fp16}
		base=${base%-fp32}
		prec=${v##*-}
		[[ -f $dir/manifests/$base.json && ! -f $dir/manifests/$v.json ]] || continue
		if ! "$bin" weights convert -data-dir "$dir" -precision "$prec" -name "$v" "$base" </dev/null; then
			echo "ferry.sh: could not derive $v (the configs using it will skip it)" >&2
			continue
		fi
		sum=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["files"][0]["sha256"])' "$dir/manifests/$v.json" </dev/null)
		if [[ $sum == "$pin" ]]; then
			echo "  $v: matches the catalog's pin"
		else
			echo "  $v: DIFFERS from the catalog's pin $pin (converted from the staged $base)"
		fi
	done <"$pins"
}

# fetch_wheels: every "name==version sha256" line of wheels-images.txt into
# bench/gpu/wheels/, downloaded once, checked every time.
fetch_wheels() {
	mkdir -p "$gpu/wheels"
	local name ver sum file
	while read -r spec sum file; do
		[[ -z $spec || $spec == \#* ]] && continue
		if [[ ! -f $gpu/wheels/$file ]]; then
			python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
				"$spec" --hash "sha256:$sum" -d "$gpu/wheels" 2>/dev/null ||
				pip3 download --quiet --no-deps --only-binary=:all: "$spec" -d "$gpu/wheels" ||
				die "cannot download $spec"
		fi
		echo "$sum  $gpu/wheels/$file" | sha256sum -c --quiet || die "$file: SHA-256 mismatch"
		echo "  $file"
	done <"$gpu/wheels-images.txt"
}

# ---------------------------------------------------------------- pack
cmd_pack() {
	[[ -d $stage/bin && -d $stage/store ]] || die "nothing staged: run ferry.sh stage"
	[[ -f $stage/ort/libonnxruntime.so.1.30.0 ]] || echo "WARNING: packing without $stage/ort/libonnxruntime.so.1.30.0" >&2
	local slim part_mib margin=${FERRY_MARGIN_MIB:-4}
	slim=$(slim_bytes)
	part_mib=${FERRY_PART_MIB:-$(( (64 * mib - slim) / mib - margin ))}
	((part_mib >= 8)) || die "slim tree $((slim / mib)) MiB leaves no room for parts"

	# SHA256SUMS of every staged file, checked after extraction on the device.
	(cd "$stage" && find . -type f ! -name SHA256SUMS.stage -print0 | sort -z | xargs -0 sha256sum) >"$stage/SHA256SUMS.stage"
	rm -rf "$ferry"
	mkdir -p "$ferry"
	local t0=$SECONDS
	# Order: small and code first, the models last (largest last). A 128 MiB
	# dictionary reaches across a whole ISNet file (88 MB); blocks of 256 MiB
	# let -T2 use both cores (each thread ~1.5 GiB). xz -9e here: ~13 MiB of
	# input a minute per busy core; about 20 min for the real stage.
	local list
	list=$(cd "$stage" && {
		echo SHA256SUMS.stage
		find ort bin wheels assets store/manifests -type f 2>/dev/null | sort
		ls -S store/blobs | sed 's|^|store/blobs/|' | tac
	})
	# shellcheck disable=SC2086
	(cd "$stage" && tar --owner=0 --group=0 --numeric-owner -cf - $list) |
		xz ${FERRY_XZ:--9e -T2} --lzma2=preset=9e,dict=${FERRY_DICT:-128MiB} --block-size=${FERRY_BLOCK:-256MiB} \
			-c >"$ferry/stage.tar.xz"
	local total
	total=$(stat -c %s "$ferry/stage.tar.xz")
	echo "compressed $(du -sb "$stage" | cut -f1 | awk -v m=$mib '{printf "%.2f", $1/m}') MiB staged to $(awk -v a="$total" -v m=$mib 'BEGIN{printf "%.2f", a/m}') MiB in $((SECONDS - t0)) s"

	local whole
	whole=$(sha256sum "$ferry/stage.tar.xz" | cut -d' ' -f1)
	(cd "$ferry" && split -d -a 2 --numeric-suffixes=1 -b "${part_mib}M" stage.tar.xz chunk.)
	local n=0 c i
	n=$(ls "$ferry"/chunk.* | wc -l)
	{
		echo "archive $whole $total $n"
		for c in "$ferry"/chunk.*; do
			i=${c##*.}
			echo "part $i $(sha256sum "$c" | cut -d' ' -f1) $(stat -c %s "$c")"
		done
	} >"$ferry/index"
	for c in "$ferry"/chunk.*; do
		i=${c##*.}
		mkdir -p "$ferry/part$i"
		mv "$c" "$ferry/part$i/stage.tar.xz.$i"
		cp "$ferry/index" "$ferry/part$i/index"
	done
	rm -f "$ferry/stage.tar.xz"

	echo
	echo "slim tree (without ${big_testdata[*]}): $(awk -v a="$slim" -v m=$mib 'BEGIN{printf "%.2f", a/m}') MiB; parts of at most $part_mib MiB ($margin MiB margin)"
	echo "$n device calls. Here first: bash bench/gpu/ferry.sh aside && bash bench/gpu/ferry.sh size"
	echo "then, one right after the other (the machine goes back 30 s after a call):"
	for c in "$ferry"/part*; do
		i=${c##*part}
		local sz
		sz=$(du -sb "$c" | cut -f1)
		local cmd="bash bench/gpu/ferry.sh unpack"
		((10#$i == n)) && cmd="bash bench/gpu/ferry.sh unpack && bash bench/gpu/images.sh"
		local to=180
		((10#$i == n)) && to=540
		printf '  call %d: command: %s\n          carry:   ["%s"]   (%s MiB + tree %s MiB)\n          timeout_s: %d\n' \
			"$((10#$i))" "$cmd" "$c" "$(awk -v a="$sz" -v m=$mib 'BEGIN{printf "%.2f", a/m}')" \
			"$(awk -v a="$slim" -v m=$mib 'BEGIN{printf "%.2f", a/m}')" "$to"
	done
	echo "afterwards, here: bash bench/gpu/ferry.sh back"
}

# ---------------------------------------------------------------- aside/back
cmd_aside() {
	# Refuse if a large test-data dir appeared that the list does not name.
	local b d
	while read -r b d; do
		((b > mib)) || continue
		[[ " ${big_testdata[*]} " == *" $d "* ]] || die "$d holds $((b / mib)) MiB of test data and is not in ferry.sh's list"
	done < <(testdata_dirs)
	mkdir -p "$aside"
	for d in "${big_testdata[@]}"; do
		local dst=$aside/${d//\//__}
		if [[ -e $dst ]]; then
			[[ -e $d ]] && die "both $d and $dst exist: run ferry.sh back first, or sort it out by hand"
			echo "  $d: already aside"
			continue
		fi
		[[ -d $d ]] || die "$d missing and not aside"
		mv "$d" "$dst"
		echo "  $d -> $dst"
	done
	cmd_size
	echo "(run 'bash bench/gpu/ferry.sh back' when the device calls are done: tests need these files)"
}

cmd_back() {
	local d
	for d in "${big_testdata[@]}"; do
		local src=$aside/${d//\//__}
		if [[ ! -e $src ]]; then
			[[ -d $d ]] && { echo "  $d: in place"; continue; }
			die "$d is neither in place nor in $aside"
		fi
		[[ -e $d ]] && die "both $d and $src exist: not overwriting; sort it out by hand"
		mkdir -p "$(dirname "$d")"
		mv "$src" "$d"
		echo "  $src -> $d"
	done
	rmdir "$aside" 2>/dev/null || true
	local dirty
	dirty=$(git status --porcelain -- "${big_testdata[@]}")
	if [[ -n $dirty ]]; then
		echo "$dirty" >&2
		die "the restored test data differs from git (above)"
	fi
	echo "restored; git status is clean for ${big_testdata[*]}"
	cmd_size
}

# ---------------------------------------------------------------- unpack
cmd_unpack() {
	local work=${FERRY_WORK:-}
	if [[ -z $work ]]; then
		work=/root/falocal-gpu
		mkdir -p "$work" 2>/dev/null || work=${TMPDIR:-/tmp}/falocal-gpu
	fi
	mkdir -p "$work/parts"
	local p idx got=0
	for p in "$ferry"/part*/; do
		[[ -d $p ]] || continue
		idx=$p/index
		[[ -f $idx ]] || die "$p has no index"
		if [[ -f $work/parts/index && "$(cat "$idx")" != "$(cat "$work/parts/index")" ]]; then
			echo "ferry.sh: a new pack (index differs): dropping the parts of the old one"
			rm -f "$work"/parts/*
		fi
		cp "$idx" "$work/parts/index"
		local f
		for f in "$p"stage.tar.xz.*; do
			local i=${f##*.} want
			want=$(awk -v i="$i" '$1 == "part" && $2 == i {print $3}' "$idx")
			[[ -n $want ]] || die "$f is not in the index"
			[[ $(sha256sum "$f" | cut -d' ' -f1) == "$want" ]] || die "$f: SHA-256 mismatch"
			[[ -f $work/parts/stage.tar.xz.$i ]] || cp "$f" "$work/parts/"
			echo "part $i: ok"
			got=1
		done
	done
	[[ -f $work/parts/index ]] || die "no parts here and none kept in $work/parts"
	local whole total n have=0 missing=()
	read -r _ whole total n <"$work/parts/index"
	local i
	for ((i = 1; i <= n; i++)); do
		local name
		name=$(printf 'stage.tar.xz.%02d' "$i")
		if [[ -f $work/parts/$name ]] && [[ $(sha256sum "$work/parts/$name" | cut -d' ' -f1) == $(awk -v i="$(printf %02d "$i")" '$1 == "part" && $2 == i {print $3}' "$work/parts/index") ]]; then
			have=$((have + 1))
		else
			missing+=("$i")
		fi
	done
	echo "have $have of $n parts in $work/parts"
	if ((have < n)); then
		echo "waiting for parts ${missing[*]}: carry them in the next calls (the machine keeps $work while held)"
		return 0
	fi
	if [[ -f $work/stage/.archive && $(cat "$work/stage/.archive") == "$whole" ]]; then
		echo "stage already extracted in $work/stage"
	else
		rm -rf "$work/stage.new"
		mkdir -p "$work/stage.new"
		local got_sum
		got_sum=$(cat "$work"/parts/stage.tar.xz.* | tee >(xz -dc | tar -x -C "$work/stage.new") | sha256sum | cut -d' ' -f1)
		[[ $got_sum == "$whole" ]] || die "joined archive: SHA-256 mismatch"
		(cd "$work/stage.new" && sha256sum -c --quiet SHA256SUMS.stage) || die "extracted files do not match SHA256SUMS.stage"
		rm -rf "$work/stage"
		mv "$work/stage.new" "$work/stage"
		echo "$whole" >"$work/stage/.archive"
		echo "extracted and checked into $work/stage"
	fi
	# The sonames ONNX Runtime's loader and the CUDA provider look for.
	if [[ -f $work/stage/ort/libonnxruntime.so.1.30.0 ]]; then
		ln -sfn libonnxruntime.so.1.30.0 "$work/stage/ort/libonnxruntime.so.1"
		ln -sfn libonnxruntime.so.1.30.0 "$work/stage/ort/libonnxruntime.so"
	fi
	chmod +x "$work"/stage/bin/* 2>/dev/null || true
	derive_fp16 "$work/stage/store" "${FALOCAL_BIN:-$work/stage/bin/falocal}" "$work/stage/bin/fp16-pins"
	(cd "$work/stage" && find . \( -type f -o -type l \) ! -path './store/blobs/*' | sort | sed 's/^/  /')
	echo "  store/blobs: $(ls "$work/stage/store/blobs" | wc -l) blobs, $(du -sh "$work/stage/store/blobs" | cut -f1)"
	echo "$work/stage" >"$work/STAGE"
	return 0
}

case ${1:-} in
stage) cmd_stage ;;
pack) cmd_pack ;;
aside) cmd_aside ;;
back) cmd_back ;;
size) cmd_size ;;
unpack) cmd_unpack ;;
derive) derive_fp16 "${2:?store dir}" "${3:-$stage/bin/falocal}" "$stage/bin/fp16-pins" ;;
testdata) testdata_dirs | awk -v m=$mib '{printf "%8.2f MiB  %s\n", $1/m, $2}' ;;
*) echo "usage: ferry.sh stage|pack|aside|back|size|unpack|derive STORE|testdata" >&2; exit 2 ;;
esac
