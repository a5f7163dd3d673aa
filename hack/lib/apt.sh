# shellcheck shell=bash
# The apt checks of the end-to-end stages (sourced after common.sh), each run in a container of
# the private daemon by a script of hack/lib/container/ mounted into it.
#
#   apt_closure IMAGE REPO ARCH LIST
#       In a container of IMAGE with no network, apt with an EMPTY dpkg status, APT::Architecture
#       ARCH and REPO (a flat repository directory) as its only source simulates `apt-get
#       install` of every package in the file LIST: prints how many packages it would install;
#       fails (apt's words on stderr) when the repository alone does not hold the closure.
#   apt_install IMAGE SOURCE LIST [CONTAINER_NAME] [CA]
#       A real `apt-get install` of LIST in a fresh container of IMAGE whose only source is
#       SOURCE: a repository directory (mounted, no network at all) or an http(s) URL of a
#       served one (host network; CA: the PEM file to trust for https). Every listed package
#       must end up installed. Prints one line saying so (apt's last lines when it fails).
#   apt_install_digest IMAGE REPO LIST
#       what an install of LIST from the repository directory REPO in IMAGE depends on: the
#       image's ID, the repository's index (every .deb by its SHA256) and the list. A stage that
#       proved such an install keeps it; another finding the same digest need not repeat it.
CONTAINER_SCRIPTS=$ROOT/hack/lib/container

apt_closure() { # IMAGE REPO ARCH LIST
  "$DOCKER" run --rm --network none -v "$CONTAINER_SCRIPTS:/kpbuild-scripts:ro" -v "$2:/repo:ro" \
    -v "$4:/list:ro" -e ARCH="$3" "$1" sh /kpbuild-scripts/apt-closure.sh
}

apt_install_digest() { # IMAGE REPO LIST
  { "$DOCKER" image inspect -f '{{.Id}}' "$1"; cat "$2/Packages" "$3"; } | sha256sum | cut -d' ' -f1
}

apt_install() { # IMAGE SOURCE LIST [CONTAINER_NAME] [CA]
  local image=$1 source=$2 list=$3 args=(--rm)
  [ -z "${4:-}" ] || args+=(--name "$4")
  [ -z "${5:-}" ] || args+=(-v "$5:/ca.pem:ro")
  case $source in
    http://* | https://*) args+=(--network host -e "SOURCE=$source") ;;
    *) args+=(--network none -v "$source:/repo:ro" -e SOURCE=file:/repo) ;;
  esac
  "$DOCKER" run "${args[@]}" -v "$CONTAINER_SCRIPTS:/kpbuild-scripts:ro" -v "$list:/list:ro" \
    "$image" sh /kpbuild-scripts/apt-install.sh
}
