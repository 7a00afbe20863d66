#!/usr/bin/env bash
# Entrypoint of the CPU image (Dockerfile): installs an offline bundle
# mounted at $FALOCAL_BUNDLE once, then runs falocal with the arguments.
#
#   docker run -v falocal:/var/lib/falocal -v ./site.falb:/bundle/site.falb:ro \
#     -v ./site.pub:/bundle/site.pub:ro -e FALOCAL_KEYS=id:secret falocal:cpu
#
# FALOCAL_BUNDLE        bundle file to install (default /bundle/site.falb);
#                       absent: nothing is installed
# FALOCAL_BUNDLE_TRUST  public key the bundle must be signed with (default
#                       /bundle/site.pub when present); without one the
#                       install only checks the bundle against its own manifest
set -euo pipefail

bundle=${FALOCAL_BUNDLE:-/bundle/site.falb}
trust=${FALOCAL_BUNDLE_TRUST:-}
if [[ -z $trust && -f /bundle/site.pub ]]; then
	trust=/bundle/site.pub
fi
data=${FALOCAL_DATA_DIR:?FALOCAL_DATA_DIR must name the data directory}

# Only before serving: 'docker run IMAGE weights list' and the like run as
# asked.
if [[ ${1:-serve} == serve && -f $bundle ]]; then
	# A bundle is installed once: the marker records which file (name, size,
	# modification time), so a restart does not hash many GB again and a new
	# bundle mounted in its place is installed at the next start.
	mkdir -p "$data"
	marker=$data/.bundle-installed
	id=$(stat -c '%n %s %Y' -- "$bundle")
	if [[ ! -f $marker || $(<"$marker") != "$id" ]]; then
		args=(bundle install)
		if [[ -n $trust ]]; then
			args+=(-trust "$trust")
		fi
		echo "falocal-entrypoint: installing $bundle" >&2
		falocal "${args[@]}" "$bundle"
		printf '%s\n' "$id" >"$marker"
	fi
fi
exec falocal "$@"
