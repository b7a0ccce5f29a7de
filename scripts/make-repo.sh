#!/bin/sh
# make-repo.sh OUT URL DEB... -- RPM...: signed apt and dnf repositories of the packages
# given, for `apt install theiaos-podman` and `dnf install theiaos-podman` by name.
#
#   OUT/apt/                     flat apt repository: Packages(.gz), Release, InRelease, Release.gpg
#   OUT/dnf/                     signed rpms, repodata/ with repomd.xml.asc
#   OUT/theiaos-podman.asc       the public key (apt's Signed-By, rpm --import, gpgkey=)
#   OUT/theiaos-podman.sources   what a Debian host puts in /etc/apt/sources.list.d/
#   OUT/theiaos-podman.repo      what a Fedora/RHEL host puts in /etc/yum.repos.d/
#
# URL is where a host finds OUT (file:///var/tmp/theiaos-repo in the lab tests). The
# signing key is GNUPGHOME's first secret key; with none there, a key is made for the
# build (RSA 3072: gpgv, sqv and rpm all verify it). Debian's own tools throughout:
# apt-ftparchive, gpg, rpmsign, createrepo_c.
set -eu

out=$1
url=$2
shift 2
: "${GNUPGHOME:?set GNUPGHOME to the home of the signing key (make repo does)}"
export GNUPGHOME

mkdir -p "$GNUPGHOME"
chmod 700 "$GNUPGHOME"
if ! gpg --batch --list-secret-keys --with-colons 2>/dev/null | grep -q '^sec'; then
    gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-generate-key \
        "theiaos-podman build key <build@theiaos-podman.invalid>" rsa3072 sign never
fi
fpr=$(gpg --batch --list-secret-keys --with-colons | awk -F: '/^fpr/ {print $10; exit}')

rm -rf "$out"
mkdir -p "$out/apt" "$out/dnf"
gpg --batch --armor --export "$fpr" > "$out/theiaos-podman.asc"

sign() {  # sign FILE...: gpg with the repository's key, no passphrase prompt
    gpg --batch --yes --quiet --pinentry-mode loopback --passphrase '' -u "$fpr" "$@"
}

for f in "$@"; do
    shift
    [ "$f" = "--" ] && break
    cp "$f" "$out/apt/"
done
(
    cd "$out/apt"
    apt-ftparchive packages . > Packages
    gzip -9nk Packages
    apt-ftparchive -o APT::FTPArchive::Release::Origin=theiaos-podman \
        -o APT::FTPArchive::Release::Label=theiaos-podman \
        -o APT::FTPArchive::Release::Suite=stable release . > ../Release.tmp
    mv ../Release.tmp Release
    sign --digest-algo SHA512 --clearsign -o InRelease Release
    sign --digest-algo SHA512 --detach-sign --armor -o Release.gpg Release
)

for f in "$@"; do
    cp "$f" "$out/dnf/"
done
for f in "$out"/dnf/*.rpm; do
    [ -e "$f" ] || continue
    rpmsign --addsign --define "__gpg $(command -v gpg)" --define "_gpg_name $fpr" \
        --define "_gpg_path $GNUPGHOME" \
        --define "_gpg_digest_algo sha512" "$f" > /dev/null
done
createrepo_c --quiet "$out/dnf"
sign --detach-sign --armor -o "$out/dnf/repodata/repomd.xml.asc" "$out/dnf/repodata/repomd.xml"

cat > "$out/theiaos-podman.sources" <<EOF
Types: deb
URIs: $url/apt
Suites: ./
Signed-By: /usr/share/keyrings/theiaos-podman.asc
EOF
cat > "$out/theiaos-podman.repo" <<EOF
[theiaos-podman]
name=theiaos-podman
baseurl=$url/dnf
enabled=1
gpgcheck=1
repo_gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-theiaos-podman
EOF
echo "signed repositories in $out (key $fpr)"
