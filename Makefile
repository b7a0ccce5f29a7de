# theiaos-podman: build, test and demo. Everything runs on Debian's own python3.
#   make check   install what the tests need, then run every test tier
#   make soak    the lab lifecycles with 15 timed boots each, the real gateway with 5
#   make demo    build the .deb, boot the lab, install it, bring the gateway up
#                (GATEWAY=real: the public gateway from npm instead of the stand-in)
#   make deb     build dist/theiaos-podman_<version>_all.deb
#   make rpm     build dist/theiaos-podman-<version>-1.noarch.rpm (make repo: a dnf repo)
#   make piuparts  Debian's package tester on the .deb (also part of make check)
#   make bench   every cost an operator pays against its floor, in one lab (README)

SHELL := /bin/bash
PY := /usr/bin/python3
VENV := .venv
VPY := $(VENV)/bin/python
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' theiaos_pkg/__init__.py)
DEB := dist/theiaos-podman_$(VERSION)-1_all.deb
# The same code as the next Debian revision: the lifecycle tests upgrade DEB to it.
DEB_NEXT := dist/theiaos-podman_$(VERSION)-2_all.deb
# Debian's packages the build, the tests and the lab need on a Debian 12 build machine.
APT_DEPS := python3 python3-venv python3-pystemd python3-jinja2 python3-dotenv \
	python3-dbusmock python3-pytest python3-stdeb python3-all python3-setuptools \
	dh-python debhelper fakeroot build-essential lintian shellcheck dbus \
	systemd-container mmdebstrap rpm rpmlint createrepo-c curl piuparts dpkg-dev \
	apt-utils gnupg openssh-client iproute2 chromium chromium-driver python3-selenium
PIP_DEPS := ruff==0.8.6 mypy==1.13.0

RPM := dist/theiaos-podman-$(VERSION)-1.noarch.rpm
RPM_NEXT := dist/theiaos-podman-$(VERSION)-2.noarch.rpm
# The released packages, exactly as built then: the lifecycle tests upgrade from the
# newest of them to the packages just built (../shared/releases/README.md). The file
# `releases` records each version's commit: on a clone without RELEASES, `make released`
# rebuilds the newest from the repository's history (tests/releases.py, cached).
RELEASES ?= $(abspath ../shared/releases)
RELEASE := $(shell sed -n 's/^\([0-9]*\.[0-9]*\.[0-9]*\) .*/\1/p' releases | sort -V | tail -n 1)
RELEASED_DIR = $(RELEASES)
RELEASE_DEB = $(RELEASED_DIR)/$(RELEASE)/theiaos-podman_$(RELEASE)-1_all.deb
RELEASE_RPM = $(RELEASED_DIR)/$(RELEASE)/theiaos-podman-$(RELEASE)-1.noarch.rpm

# $(call stdeb,BUILD-DIR,DEBIAN-REVISION): stdeb with Debian's own python3 first on PATH.
define stdeb
	rm -rf build/$(1) *.egg-info && mkdir -p build/$(1) dist
	PATH=/usr/bin:/bin:/usr/sbin:/sbin $(PY) setup.py --command-packages=stdeb.command \
		sdist_dsc --dist-dir build/$(1) --ignore-install-requires --compat 13 \
		--debian-version $(2) bdist_deb > build/$(1).log 2>&1 \
		|| { tail -40 build/$(1).log; exit 1; }
	cp build/$(1)/theiaos-podman_$(VERSION)-$(2)_all.deb $@
endef

# $(call rpmbuild,RELEASE): the spec built with this machine's (Debian's) rpmbuild.
define rpmbuild
	rm -rf build/rpm$(1) *.egg-info && mkdir -p build/rpm$(1)/SOURCES dist
	$(PY) setup.py -q sdist -d build/rpm$(1)/SOURCES > build/rpm$(1).log 2>&1 \
		|| { tail -40 build/rpm$(1).log; exit 1; }
	cp sysusers/theiaos-podman.conf build/rpm$(1)/SOURCES/theiaos-podman.sysusers
	rpmbuild -bb --define "_topdir $(abspath build/rpm$(1))" --define "theiaos_release $(1)" \
		rpm/theiaos-podman.spec >> build/rpm$(1).log 2>&1 || { tail -40 build/rpm$(1).log; exit 1; }
	cp build/rpm$(1)/RPMS/noarch/theiaos-podman-$(VERSION)-$(1).noarch.rpm $@
endef

.PHONY: deps check test soak deb rpm repo demo lint clean piuparts bench
deps: $(VENV)/.done

$(VENV)/.done: Makefile
	@missing=$$(dpkg-query -W -f='$${Package} $${db:Status-Status}\n' $(APT_DEPS) 2>/dev/null \
		| awk '$$2 != "installed" {print $$1}'; for p in $(APT_DEPS); do \
		dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done | sort -u); \
	if [ -n "$$missing" ]; then \
		echo "+ apt-get install $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v npm >/dev/null || { echo "+ apt-get install npm"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	@# the fleet test's Ansible: ansible-core alone (its Recommends are 500 MB of collections)
	@dpkg-query -W -f='$${db:Status-Status}' ansible-core 2>/dev/null | grep -qx installed || { \
		echo "+ apt-get install --no-install-recommends ansible-core"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ansible-core; }
	$(PY) -m venv --system-site-packages $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check $(PIP_DEPS)
	touch $@

deb: $(DEB)

$(DEB): deps $(shell git ls-files theiaos_pkg units debian docs completions bin defaults sysusers scripts) pyproject.toml setup.py stdeb.cfg MANIFEST.in
	$(call stdeb,deb,1)
	@echo "built $@"

$(DEB_NEXT): $(DEB)
	$(call stdeb,deb2,2)

rpm: $(RPM)

$(RPM): deps $(shell git ls-files theiaos_pkg units rpm docs completions bin defaults sysusers scripts) pyproject.toml
	$(call rpmbuild,1)

$(RPM_NEXT): $(RPM)
	$(call rpmbuild,2)

# Signed apt and dnf repositories (scripts/make-repo.sh) of the last release and both
# builds, with the public key and a .sources and a .repo file for hosts; the lab tests
# install from them by name. The key is REPO_GNUPGHOME's (made for the build when empty).
REPO_URL ?= file:///var/tmp/theiaos-repo
REPO_GNUPGHOME ?= $(abspath build/repo-gnupg)
repo: $(DEB) $(DEB_NEXT) $(RPM) $(RPM_NEXT) released
	GNUPGHOME=$(REPO_GNUPGHOME) sh scripts/make-repo.sh dist/repo $(REPO_URL) \
		$(RELEASE_DEB) $(DEB) $(DEB_NEXT) -- $(RELEASE_RPM) $(RPM) $(RPM_NEXT)

.PHONY: released
released:
	$(eval RELEASED_DIR := $(shell $(PY) -m tests.releases $(RELEASES) | tail -n 1))
	@test -f $(RELEASE_DEB) -a -f $(RELEASE_RPM) || { echo "no released packages for" \
		"$(RELEASE) (set RELEASES=DIR: DIR/VERSION/theiaos-podman_VERSION-1_all.deb and .rpm)"; exit 1; }
	@case "$(RELEASE)" in $(VERSION)) echo "the package's version $(VERSION) is already" \
		"released: bump theiaos_pkg/__init__.py"; exit 1;; esac

check: deps $(DEB) $(DEB_NEXT) repo
	$(PY) -m tests.lab rootfs debian13 debian12
	$(PY) -m tests.gateway_image
	THEIAOS_DEB=$(abspath $(DEB)) THEIAOS_DEB_NEXT=$(abspath $(DEB_NEXT)) \
		THEIAOS_RELEASE_DEB=$(RELEASE_DEB) THEIAOS_RELEASE=$(RELEASE) \
		THEIAOS_RPM=$(abspath $(RPM)) THEIAOS_RPM_NEXT=$(abspath $(RPM_NEXT)) \
		THEIAOS_REPO=$(abspath dist/repo) THEIAOS_REPO_GNUPGHOME=$(REPO_GNUPGHOME) \
		$(VPY) -m pytest -ra $(PYTEST_ARGS)

test: check

# The readiness proof: 15 boots in each of the deb and rpm labs and 5 with the real
# gateway, every one timed (make check boots each lab 3 times). About 15 minutes.
SOAK_TESTS := tests/system/test_lifecycle_deb.py tests/system/test_lifecycle_rpm.py \
	tests/system/test_real_gateway.py
soak:
	THEIAOS_POWER_CYCLES=15 THEIAOS_REAL_POWER_CYCLES=5 $(MAKE) check PYTEST_ARGS="$(SOAK_TESTS)"

# Debian's package tester alone (make check runs it too): install/purge of the .deb and
# the upgrade from the last release, offline, in a cached Debian 13 base.
piuparts: deps $(DEB) released
	sh tests/piuparts.sh $(abspath $(DEB)) $(RELEASE_DEB)

demo: deps $(DEB)
	$(VPY) -m tests.demo $(abspath $(DEB)) $(if $(filter real,$(GATEWAY)),--gateway real)

# Not a test (the machines are noisy): a table of medians and ratios, side by side in one
# lab. BENCH_ROUNDS=15 by default; it boots its own lab (do not run two labs at once).
BENCH_ROUNDS ?= 15
bench: deps $(DEB)
	$(PY) -m tests.lab rootfs debian13
	$(PY) -m bench $(abspath $(DEB)) $(BENCH_ROUNDS)

clean:
	rm -rf build dist deb_dist *.egg-info theiaos-podman-*.tar.gz
