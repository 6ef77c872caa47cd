# Shared by the tools/*.sh scripts (sourced, not run): how a
# pinned Go tool is checked and installed into .tools/bin.
#
# A binary counts as installed when `go version -m` (which reads the build information
# compiled into it, with no network) names the pinned module version, and, for one built
# from a folder of this repository, when it is newer than every file in that folder.

# Never let the go command fetch a different toolchain behind our back.
export GOTOOLCHAIN=local CGO_ENABLED=0
# Module and build caches inside the repository (git-ignored, kept between runs), so a second
# run of any make target rebuilds nothing and `make clean-cache` frees the space (several GB
# once the cluster and the compose stack's services are built). -modcacherw: deletable.
CACHE=${CACHE:-$PWD/.cache}
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS=-modcacherw
GO_FLAGS=(-trimpath -ldflags "-s -w")

# module_dir MODULE VERSION: the folder of MODULE@VERSION in the module cache (downloaded if
# it is not there yet).
module_dir() {
    go mod download -json "$1@$2" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

# copy_from_module WHAT MODULE VERSION DEST COPY: fill DEST from MODULE@VERSION's files,
# once per version. COPY is a function called with the module's folder and DEST (emptied
# first); DEST/VERSION records what it holds, so a second run leaves it and the network alone.
copy_from_module() {
    local what=$1 module=$2 version=$3 dest=$4 copy=$5 source
    if [[ -f $dest/VERSION && $(<"$dest/VERSION") == "$version" ]]; then
        echo "$what $version: up to date"
        return
    fi
    source=$(module_dir "$module" "$version")
    rm -rf "$dest"
    mkdir -p "$dest"
    "$copy" "$source" "$dest"
    echo "$version" >"$dest/VERSION"
    echo "$what $version: copied"
}

# require_go TARGET WHY: stop with a clear message when the go command is missing.
require_go() {
    if ! command -v go >/dev/null; then
        echo "make $1: the go command is missing; install Go ($2)" >&2
        exit 1
    fi
}

# module_version GO_MOD MODULE: the version GO_MOD requires of MODULE (empty if none).
module_version() {
    awk -v m="$2" '{for (i = 1; i < NF; i++) if ($i == m && $(i + 1) ~ /^v/) print $(i + 1)}' "$1"
}

# built_from BINARY MODULE VERSION: was BINARY linked from MODULE at exactly VERSION?
built_from() {
    [[ -x $1 ]] && go version -m "$1" 2>/dev/null |
        awk -v m="$2" -v v="$3" '($1 == "mod" || $1 == "dep") && $2 == m && $3 == v {ok = 1} END {exit !ok}'
}

# newer_than BINARY PATH...: is BINARY newer than every file under PATH...?
newer_than() {
    local binary=$1
    shift
    [[ -z $(find "$@" -type f -newer "$binary" -print -quit) ]]
}

# go_install NAME MODULE PACKAGE VERSION [LDFLAGS]: `go install PACKAGE@VERSION` as $BIN/NAME,
# LDFLAGS added to the linker's (e.g. the version stamps a release build sets).
# (go install names a binary after its folder, e.g. "server"; a scratch GOBIN renames it.)
go_install() {
    local name=$1 module=$2 package=$3 version=$4 ldflags=${5:-} scratch start
    if built_from "$BIN/$name" "$module" "$version"; then
        echo "$name $version: up to date"
        return
    fi
    echo "$name $version: go install $package@$version"
    start=$SECONDS
    scratch=$(mktemp -d)
    GOBIN=$scratch go install -trimpath -ldflags "-s -w $ldflags" "$package@$version"
    mv -f "$scratch/$(basename "$package")" "$BIN/$name"
    rm -rf "$scratch"
    echo "$name $version: installed in $((SECONDS - start)) s"
}

# go_build NAME FOLDER MODULE VERSION: build the main package in FOLDER (a folder of this
# repository whose go.mod pins MODULE at VERSION) as $BIN/NAME.
go_build() {
    local name=$1 folder=$2 module=$3 version=$4 start
    if built_from "$BIN/$name" "$module" "$version" && newer_than "$BIN/$name" "$folder"; then
        echo "$name ($module $version): up to date"
        return
    fi
    echo "$name ($module $version): building $folder"
    start=$SECONDS
    (cd "$folder" && go build "${GO_FLAGS[@]}" -o "$BIN/$name.new" .)
    mv -f "$BIN/$name.new" "$BIN/$name"
    echo "$name ($module $version): built in $((SECONDS - start)) s"
}
