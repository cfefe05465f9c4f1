"""What known programs do, as data: read-only tools, tools that change files, system-changing tools,
and per-subcommand ratings of package managers and developer tools."""
from __future__ import annotations

from .rating import DANGEROUS, SAFE

VERSION_ARGS = {"--version", "version", "--help", "help", "-version", "-help", "/?", "-?"}
# Programs whose -v / -V / -h only print a version or usage (elsewhere they may mean much more: shutdown -h).
SHORT_VERSION_PROGRAMS = set("node npm npx yarn pnpm bun deno php perl java javac gcc g++ clang docker brew git cargo "
                             "rustc rustup pip go python ruby ssh tmux vim nvim code kubectl helm terraform gh "
                             "winget choco scoop make cmake uv poetry conda".split())

# Read-only: they look at files, processes or the network and change nothing.
SAFE_PROGRAMS = set("""
ls ll la dir vdir cat bat batcat head tail less more grep egrep fgrep rg ag ack wc sort uniq cut tr nl column fold
fmt paste join comm diff cmp file stat du df tree locate mlocate which whereis type realpath readlink dirname basename
pwd echo printf true false test [ sleep date cal uptime uname whoami id groups who w last logname users env printenv
ps pgrep pstree top htop btop free vm_stat vmstat iostat mpstat lscpu lsblk lsusb lspci lsof ss netstat ping traceroute
tracepath dig nslookup host whois jq yq xmllint md5sum sha1sum sha224sum sha256sum sha384sum sha512sum shasum md5
cksum b2sum base64 base32 xxd od hexdump strings nproc getconf locale sw_vers system_profiler lsb_release arch tty man
info apropos whatis history clear tput seq shuf yes expr factor cd pushd popd dirs export alias unalias hash read wait
set unset shift getopts local declare typeset readonly let trap ulimit umask : pbpaste pbcopy xclip xsel wl-copy
wl-paste mdfind mdls otool ldd nm objdump readelf size zcat zless zgrep bzcat xzcat lz4cat zstdcat tac
rev look spell numfmt dpkg-query tsort ptx expand unexpand iconv systeminfo tasklist ver
where findstr ipconfig hostname get-process get-childitem get-psdrive get-volume get-command get-ciminstance get-content
select-string select-object sort-object format-table format-list measure-object where-object test-path get-item
get-service get-netipaddress get-nettcpconnection winver get-date get-location write-output write-host
get-computerinfo get-wmiobject gci gc ioreg nettop lsappinfo
""".split())

# They write files, build, fetch or install: fine after a confirmation.
MODERATE_PROGRAMS = set("""
mkdir touch cp mv ln install tar unzip zip gzip gunzip bzip2 bunzip2 xz unxz 7z 7za zstd unrar split csplit mktemp
scp sftp ssh rsync open xdg-open start code subl vim vi nvim nano emacs make cmake ninja meson gcc g++ clang clang++ cc
c++ javac java mvn gradle ant rustc tsc eslint prettier black ruff flake8 mypy pylint pytest tox nox poetry pipenv
virtualenv rbenv pyenv nvm n volta fnm rustup sdk asdf mise direnv terraform ansible ansible-playbook vagrant heroku gh
glab aws gcloud az helm minikube kind ssh-keygen gpg openssl patch svn hg sqlite3 psql mysql redis-cli createdb
mongosh jupyter ipython hatch flit twine ffmpeg convert magick pandoc say afplay shortcuts npx bunx uvx pnpx jar
dotnet swift swiftc xcodebuild xcrun flutter dart composer gem bundle bundler rake rails django-admin flask uvicorn
gunicorn celery hugo jekyll serve http-server live-server webpack vite rollup esbuild parcel turbo nx lerna
dos2unix unix2dos wget2 aria2c git-lfs pre-commit cookiecutter yo copier degit hub lazygit tig
new-item set-content add-content out-file copy-item move-item rename-item expand-archive compress-archive
""".split())

# They change the system itself: services, users, disks, the kernel, the firewall.
DANGEROUS_PROGRAMS = {
    "shutdown": "shuts down or restarts the machine", "reboot": "restarts the machine", "halt": "stops the machine",
    "poweroff": "powers the machine off", "init": "changes the run level", "telinit": "changes the run level",
    "useradd": "changes user accounts", "userdel": "deletes user accounts", "usermod": "changes user accounts",
    "adduser": "changes user accounts", "deluser": "deletes user accounts", "groupadd": "changes groups",
    "groupdel": "deletes groups", "passwd": "changes passwords", "chpasswd": "changes passwords",
    "visudo": "changes sudo rules", "umount": "unmounts filesystems", "swapoff": "disables swap",
    "swapon": "enables swap", "modprobe": "loads kernel modules", "insmod": "loads kernel modules",
    "rmmod": "unloads kernel modules", "ufw": "changes the firewall", "firewall-cmd": "changes the firewall",
    "pfctl": "changes the firewall", "nft": "changes the firewall", "chroot": "runs a program in another root",
    "nsenter": "enters other namespaces", "unshare": "creates namespaces", "setcap": "grants capabilities",
    "ldconfig": "changes the shared library cache", "grub-install": "changes the boot loader",
    "update-grub": "changes the boot loader", "efibootmgr": "changes boot entries", "csrutil": "changes system "
    "integrity protection", "spctl": "changes Gatekeeper", "nvram": "changes firmware variables",
    "pmset": "changes power settings", "networksetup": "changes network settings", "dscl": "changes directory "
    "services", "tmutil": "changes Time Machine backups", "killall": "stops processes by name",
    "pkill": "stops processes by pattern", "taskkill": "stops processes", "stop-process": "stops processes",
    "sc": "changes Windows services", "reg": "changes the Windows registry", "bcdedit": "changes boot settings",
    "net": "changes Windows accounts or shares", "netsh": "changes network settings", "schtasks": "changes "
    "scheduled tasks", "cipher": "rewrites disk data", "takeown": "takes ownership of files",
    "icacls": "changes file permissions", "attrib": "changes file attributes",
    "set-executionpolicy": "changes the PowerShell execution policy", "stop-service": "stops services",
    "restart-computer": "restarts the machine", "stop-computer": "shuts the machine down",
    "remove-item": "deletes files", "ri": "deletes files", "del": "deletes files", "erase": "deletes files",
    "rd": "deletes directories", "unlink": "deletes files", "rmdir": "deletes directories",
    "truncate": "empties files", "lvremove": "deletes logical volumes", "vgremove": "deletes volume groups",
    "pvremove": "wipes physical volumes", "cryptsetup": "changes disk encryption", "losetup": "attaches loop devices",
    "mdadm": "changes RAID arrays", "dropdb": "deletes a database", "at": "schedules commands",
    "xattr": "changes file attributes", "chflags": "changes file flags", "launchctl": "changes system services",
    "crontab": "changes scheduled jobs", "mount": "mounts filesystems", "hostnamectl": "changes the host name",
    "timedatectl": "changes the clock", "sysctl": "changes kernel settings", "iptables": "changes the firewall",
    "ip6tables": "changes the firewall", "ip": "changes network configuration", "ifconfig": "changes network "
    "configuration", "route": "changes routes", "systemctl": "changes system services",
    "service": "changes system services", "wmic": "changes Windows settings", "defaults": "changes macOS settings",
    "scutil": "changes system configuration", "kextload": "loads kernel extensions",
}

# Read-only invocations of otherwise system-changing programs: program -> first operand or flag.
SAFE_FORMS = {
    "launchctl": {"list", "print", "blame", "help"}, "crontab": {"-l"}, "mount": {"", "-l"},
    "hostnamectl": {"", "status"}, "timedatectl": {"", "status", "show"}, "sysctl": {"-a", "-n", "READ"},
    "iptables": {"-L", "-S", "--list"}, "ip6tables": {"-L", "-S", "--list"},
    "ip": {"a", "addr", "address", "r", "route", "link", "neigh", "-br", "-c", "-4", "-6", "-j", "-s"},
    "ifconfig": {"", "-a"}, "route": {"-n", "print", "get", ""}, "wmic": {"GET"}, "defaults": {"read", "domains"},
    "scutil": {"--get", "--dns", "--proxy", "--nwi"}, "sc": {"query", "qc", "queryex"}, "reg": {"query"},
    "net": {"view", "statistics", "config"}, "netsh": {"show"}, "schtasks": {"/query"}, "attrib": {""},
    "systemctl": {"status", "list-units", "list-unit-files", "is-active", "is-enabled", "is-failed", "show", "cat",
                  "list-timers", "list-sockets", "list-dependencies", "--version", ""},
    "service": {"--status-all"}, "xattr": {"", "-l", "-p"}, "pmset": {"-g"}, "tmutil": {"listbackups", "status"},
    "networksetup": {"-listallnetworkservices", "-getinfo", "-listallhardwareports", "-getdnsservers"},
    "dscl": {".", "READ"}, "spctl": {"--status", "-a", "--assess"}, "csrutil": {"status"}, "nvram": {"-p"},
}

# Subcommand ratings. A subcommand not listed rates `MODERATE`; no subcommand at all (usage) is safe.
_INSTALL = "installs or changes software"
SUBCOMMANDS: dict[str, dict[str, str]] = {
    "brew": {**dict.fromkeys("list ls info search desc config doctor outdated deps uses leaves --prefix --cellar "
                             "--repository --cache commands home shellenv".split(), SAFE),
             **dict.fromkeys("uninstall remove rm untap autoremove".split(), DANGEROUS)},
    "apt": {**dict.fromkeys("list show search policy depends rdepends showpkg changelog showsrc".split(), SAFE),
            **dict.fromkeys("remove purge autoremove autopurge".split(), DANGEROUS)},
    "apt-get": {**dict.fromkeys("check changelog".split(), SAFE),
                **dict.fromkeys("remove purge autoremove autopurge".split(), DANGEROUS)},
    "apt-cache": dict.fromkeys("search show showpkg policy depends rdepends pkgnames stats madison".split(), SAFE),
    "aptitude": {**dict.fromkeys("search show why why-not".split(), SAFE),
                 **dict.fromkeys("remove purge".split(), DANGEROUS)},
    "dnf": {**dict.fromkeys("list info search repolist repoquery check-update provides history deplist "
                            "group-list".split(), SAFE),
            **dict.fromkeys("remove erase autoremove group-remove".split(), DANGEROUS)},
    "yum": {**dict.fromkeys("list info search repolist check-update provides history deplist".split(), SAFE),
            **dict.fromkeys("remove erase autoremove".split(), DANGEROUS)},
    "microdnf": {**dict.fromkeys("repolist".split(), SAFE), **dict.fromkeys("remove".split(), DANGEROUS)},
    "zypper": {**dict.fromkeys("search se info if list-updates lu repos lr".split(), SAFE),
               **dict.fromkeys("remove rm".split(), DANGEROUS)},
    "apk": {**dict.fromkeys("info search list policy".split(), SAFE), **dict.fromkeys("del".split(), DANGEROUS)},
    "snap": {**dict.fromkeys("list info find version changes".split(), SAFE),
             **dict.fromkeys("remove".split(), DANGEROUS)},
    "flatpak": {**dict.fromkeys("list info search remotes".split(), SAFE),
                **dict.fromkeys("uninstall remove".split(), DANGEROUS)},
    "port": {**dict.fromkeys("list installed info search outdated contents".split(), SAFE),
             **dict.fromkeys("uninstall".split(), DANGEROUS)},
    "winget": {**dict.fromkeys("list ls show view search find --info source-list hash validate features "
                               "--version".split(), SAFE),
               **dict.fromkeys("uninstall remove rm".split(), DANGEROUS)},
    "choco": {**dict.fromkeys("list search info outdated find".split(), SAFE),
              **dict.fromkeys("uninstall".split(), DANGEROUS)},
    "scoop": {**dict.fromkeys("list search info status which".split(), SAFE),
              **dict.fromkeys("uninstall".split(), DANGEROUS)},
    "pip": {**dict.fromkeys("list show freeze check config debug inspect index search cache-list".split(), SAFE),
            **dict.fromkeys("uninstall".split(), DANGEROUS)},
    "pipx": {**dict.fromkeys("list environment".split(), SAFE),
             **dict.fromkeys("uninstall uninstall-all".split(), DANGEROUS)},
    "uv": {**dict.fromkeys("tree version".split(), SAFE), **dict.fromkeys("remove".split(), DANGEROUS)},
    "conda": {**dict.fromkeys("list info search env-list".split(), SAFE),
              **dict.fromkeys("remove uninstall".split(), DANGEROUS)},
    "poetry": {**dict.fromkeys("show check env-info version".split(), SAFE),
               **dict.fromkeys("remove".split(), DANGEROUS)},
    "npm": {**dict.fromkeys("ls list ll view info show outdated root bin prefix search audit doctor explain "
                            "why fund whoami ping config-get get".split(), SAFE),
            **dict.fromkeys("uninstall remove rm un unlink r unpublish publish deprecate".split(), DANGEROUS)},
    "yarn": {**dict.fromkeys("list info why outdated audit bin config-get".split(), SAFE),
             **dict.fromkeys("remove unlink publish".split(), DANGEROUS)},
    "pnpm": {**dict.fromkeys("ls list why outdated audit root bin".split(), SAFE),
             **dict.fromkeys("remove rm uninstall un unlink publish".split(), DANGEROUS)},
    "bun": {**dict.fromkeys("pm outdated".split(), SAFE), **dict.fromkeys("remove rm publish".split(), DANGEROUS)},
    "cargo": {**dict.fromkeys("tree metadata search version locate-project pkgid verify-project".split(), SAFE),
              **dict.fromkeys("uninstall publish yank".split(), DANGEROUS)},
    "go": {**dict.fromkeys("version env list doc vet help".split(), SAFE)},
    "gem": {**dict.fromkeys("list search info query specification environment contents outdated".split(), SAFE),
            **dict.fromkeys("uninstall".split(), DANGEROUS)},
    "docker": {**dict.fromkeys("ps images version info inspect logs stats top port history search events "
                               "diff".split(), SAFE),
               **dict.fromkeys("rm rmi kill prune system volume-rm network-rm container-rm image-rm "
                               "container-prune image-prune".split(), DANGEROUS)},
    "podman": {**dict.fromkeys("ps images version info inspect logs stats top port history search".split(), SAFE),
               **dict.fromkeys("rm rmi kill prune system".split(), DANGEROUS)},
    "kubectl": {**dict.fromkeys("get describe logs version top explain api-resources api-versions cluster-info "
                                "config-view auth".split(), SAFE),
                **dict.fromkeys("delete drain cordon taint replace".split(), DANGEROUS)},
    "helm": {**dict.fromkeys("list ls status get history search show version template lint".split(), SAFE),
             **dict.fromkeys("uninstall delete rollback".split(), DANGEROUS)},
    "terraform": {**dict.fromkeys("plan show output validate fmt-check version providers state-list".split(), SAFE),
                  **dict.fromkeys("apply destroy import taint".split(), DANGEROUS)},
}
SUBCOMMAND_ALIASES = {"pip3": "pip", "yum-builtin": "yum", "podman-compose": "podman", "docker-compose": "docker"}
REMOVE_REASON = "removes software or data"
INSTALL_REASON = _INSTALL

GIT_SAFE = set("status log diff show rev-parse describe blame ls-remote ls-tree shortlog reflog grep version "
               "help cat-file whatchanged show-ref show-branch for-each-ref count-objects fsck verify-commit "
               "name-rev cherry var check-ignore check-attr range-diff".split())
GIT_DANGEROUS = set("filter-branch filter-repo update-ref replace".split())

SHELLS = set("sh bash zsh dash ksh mksh fish csh tcsh ash rbash yash busybox-sh".split())
# interpreter -> (options that carry inline code, options that take a value)
INTERPRETERS: dict[str, tuple[set[str], str]] = {
    "python": ({"c"}, "cmWXQ"), "pypy": ({"c"}, "cmWX"), "perl": ({"e", "E"}, "IMmdx"),
    "ruby": ({"e"}, "rIECWTKx"), "node": ({"e", "eval", "p", "print"}, "r"), "nodejs": ({"e", "eval", "p"}, "r"),
    "php": ({"r", "B", "R", "E"}, "cdfz"), "lua": ({"e"}, "l"), "luajit": ({"e"}, "l"), "osascript": ({"e"}, "l"),
    "rscript": ({"e"}, ""), "tclsh": (set(), ""), "bun": ({"e", "eval", "p", "print"}, "r"),
    "deno": (set(), ""), "jshell": (set(), ""), "groovy": ({"e"}, ""), "julia": ({"e", "E"}, ""),
}
INTERPRETER_LONG_CODE = {"eval", "print", "command"}
AWKS = {"awk", "gawk", "mawk", "nawk", "busybox-awk"}
DELETERS = {"rm", "shred", "unlink", "rmdir", "srm", "wipe", "chmod", "chown", "chgrp", "mv", "truncate", "del",
            "erase", "rd", "remove-item", "ri"}
FORMATTERS_PREFIX = ("mkfs", "newfs")
FORMATTERS = {"mke2fs", "mkswap", "mkdosfs", "mkntfs", "mkexfatfs", "wipefs", "blkdiscard", "format", "diskpart",
              "mformat", "sgdisk-zap"}
PARTITIONERS = {"fdisk", "sfdisk", "gdisk", "cfdisk", "parted", "sgdisk"}
SHREDDERS = {"shred", "srm", "wipe"}
PERMISSIONS = {"chmod", "chown", "chgrp", "chattr", "setfacl", "chflags", "icacls", "takeown"}
NETCATS = {"nc", "ncat", "netcat", "nc.traditional", "nc.openbsd", "pwncat"}
# Assignments that change how every later program is found or loaded.
LOADER_VARIABLES = {"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "DYLD_LIBRARY_PATH",
                    "BASH_ENV", "ENV", "PROMPT_COMMAND", "IFS", "NODE_OPTIONS", "PERL5OPT", "RUBYOPT",
                    "PYTHONSTARTUP", "GIT_SSH_COMMAND", "GIT_EXTERNAL_DIFF"}
