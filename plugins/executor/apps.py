"""Applications the rules planner knows, by package manager, and how to tell the OS family apart."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MACOS, DEBIAN, FEDORA, WINDOWS = "macos", "debian", "fedora", "windows"
FAMILIES = (MACOS, DEBIAN, FEDORA, WINDOWS)
MANAGER = {MACOS: "Homebrew", DEBIAN: "apt", FEDORA: "dnf", WINDOWS: "winget"}
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+._@-]{0,63}$")


@dataclass(frozen=True)
class App:
    label: str
    brew: str | None = None  # formula, or "--cask name"
    apt: str | None = None
    dnf: str | None = None
    winget: str | None = None  # winget id
    binary: str | None = None  # the program it installs, for `--version`
    mac_app: str | None = None  # the bundle a cask installs under /Applications

    def package(self, family: str) -> str | None:
        return {MACOS: self.brew, DEBIAN: self.apt, FEDORA: self.dnf, WINDOWS: self.winget}[family]


APPS: dict[str, App] = {
    "chrome": App("Google Chrome", brew="--cask google-chrome", apt="chromium", dnf="chromium",
                  winget="Google.Chrome", binary="chromium", mac_app="Google Chrome.app"),
    "firefox": App("Firefox", brew="--cask firefox", apt="firefox-esr", dnf="firefox", winget="Mozilla.Firefox",
                   binary="firefox", mac_app="Firefox.app"),
    "vscode": App("Visual Studio Code", brew="--cask visual-studio-code", winget="Microsoft.VisualStudioCode",
                  binary="code", mac_app="Visual Studio Code.app"),
    "node": App("Node.js", brew="node", apt="nodejs", dnf="nodejs", winget="OpenJS.NodeJS.LTS", binary="node"),
    "python": App("Python 3", brew="python", apt="python3", dnf="python3", winget="Python.Python.3.12",
                  binary="python3"),
    "git": App("Git", brew="git", apt="git", dnf="git", winget="Git.Git", binary="git"),
    "docker": App("Docker", brew="--cask docker", apt="docker.io", dnf="moby-engine", winget="Docker.DockerDesktop",
                  binary="docker", mac_app="Docker.app"),
    "slack": App("Slack", brew="--cask slack", winget="SlackTechnologies.Slack", mac_app="Slack.app"),
    "spotify": App("Spotify", brew="--cask spotify", winget="Spotify.Spotify", mac_app="Spotify.app"),
    "vlc": App("VLC", brew="--cask vlc", apt="vlc", dnf="vlc", winget="VideoLAN.VLC", binary="vlc",
               mac_app="VLC.app"),
    "zoom": App("Zoom", brew="--cask zoom", winget="Zoom.Zoom", mac_app="zoom.us.app"),
    "discord": App("Discord", brew="--cask discord", winget="Discord.Discord", mac_app="Discord.app"),
    "postman": App("Postman", brew="--cask postman", winget="Postman.Postman", mac_app="Postman.app"),
    "iterm2": App("iTerm2", brew="--cask iterm2", mac_app="iTerm.app"),
    "telegram": App("Telegram", brew="--cask telegram", winget="Telegram.TelegramDesktop", mac_app="Telegram.app"),
    "curl": App("curl", brew="curl", apt="curl", dnf="curl", winget="cURL.cURL", binary="curl"),
    "wget": App("wget", brew="wget", apt="wget", dnf="wget", winget="JernejSimoncic.Wget", binary="wget"),
    "jq": App("jq", brew="jq", apt="jq", dnf="jq", winget="jqlang.jq", binary="jq"),
    "htop": App("htop", brew="htop", apt="htop", dnf="htop", binary="htop"),
    "tree": App("tree", brew="tree", apt="tree", dnf="tree", binary="tree"),
    "tmux": App("tmux", brew="tmux", apt="tmux", dnf="tmux", binary="tmux"),
    "vim": App("Vim", brew="vim", apt="vim", dnf="vim-enhanced", winget="vim.vim", binary="vim"),
    "neovim": App("Neovim", brew="neovim", apt="neovim", dnf="neovim", winget="Neovim.Neovim", binary="nvim"),
    "ffmpeg": App("FFmpeg", brew="ffmpeg", apt="ffmpeg", dnf="ffmpeg-free", winget="Gyan.FFmpeg", binary="ffmpeg"),
    "ripgrep": App("ripgrep", brew="ripgrep", apt="ripgrep", dnf="ripgrep", winget="BurntSushi.ripgrep.MSVC",
                   binary="rg"),
    "go": App("Go", brew="go", apt="golang", dnf="golang", winget="GoLang.Go", binary="go"),
    "rust": App("Rust", brew="rust", apt="rustc", dnf="rust", winget="Rustlang.Rustup", binary="rustc"),
    "java": App("Java (OpenJDK)", brew="openjdk", apt="default-jdk", dnf="java-latest-openjdk",
                winget="EclipseAdoptium.Temurin.21.JDK", binary="java"),
    "postgresql": App("PostgreSQL", brew="postgresql@16", apt="postgresql", dnf="postgresql-server",
                      winget="PostgreSQL.PostgreSQL.16", binary="psql"),
    "redis": App("Redis", brew="redis", apt="redis-server", dnf="redis", binary="redis-server"),
    "nginx": App("nginx", brew="nginx", apt="nginx", dnf="nginx", binary="nginx"),
    "cmake": App("CMake", brew="cmake", apt="cmake", dnf="cmake", winget="Kitware.CMake", binary="cmake"),
    "gcc": App("GCC", brew="gcc", apt="build-essential", dnf="gcc", binary="gcc"),
    "7zip": App("7-Zip", brew="sevenzip", apt="p7zip-full", dnf="p7zip", winget="7zip.7zip", binary="7z"),
}
ALIASES = {
    "google chrome": "chrome", "google-chrome": "chrome", "chromium": "chrome", "mozilla firefox": "firefox",
    "vs code": "vscode", "visual studio code": "vscode", "code": "vscode", "nodejs": "node", "node.js": "node",
    "python3": "python", "docker desktop": "docker", "golang": "go", "rustc": "rust", "openjdk": "java",
    "jdk": "java", "postgres": "postgresql", "nvim": "neovim", "rg": "ripgrep", "7z": "7zip", "p7zip": "7zip",
    "iterm": "iterm2", "build tools": "gcc", "build-essential": "gcc",
}


def find_app(name: str) -> App | None:
    """A known application, or a plain package name used as is (None when it is not a package name)."""
    key = ALIASES.get(name, name)
    if key in APPS:
        return APPS[key]
    if PACKAGE_NAME.match(name):
        return App(name, brew=name, apt=name, dnf=name, winget=name, binary=None)
    return None


def family(os_hint: str | None) -> str:
    """The OS family from a client's hint ("MacIntel", "Darwin", "Win32", "Ubuntu 24.04", "Linux x86_64");
    a bare "Linux" (or nothing) means the family of the server the steps will run on."""
    hint = (os_hint or "").lower()
    if any(k in hint for k in ("mac", "darwin", "osx", "os x", "iphone", "ipad")):
        return MACOS
    if hint.startswith("win") or "windows" in hint:
        return WINDOWS
    if any(k in hint for k in ("fedora", "rhel", "red hat", "centos", "rocky", "alma", "amazon")):
        return FEDORA
    if any(k in hint for k in ("debian", "ubuntu", "mint", "pop!_os", "pop_os", "elementary", "kali", "raspbian")):
        return DEBIAN
    return server_family()


def server_family(os_release: Path = Path("/etc/os-release")) -> str:
    import platform

    system = platform.system()
    if system == "Darwin":
        return MACOS
    if system == "Windows":
        return WINDOWS
    try:
        text = os_release.read_text(errors="replace").lower()
    except OSError:
        return DEBIAN
    ids = " ".join(re.findall(r"^(?:id|id_like)=\"?([^\"\n]*)", text, re.M))
    return FEDORA if any(k in ids for k in ("fedora", "rhel", "centos")) else DEBIAN
