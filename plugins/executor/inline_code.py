"""Inline interpreter code (`python -c`, `perl -e`, `node -e`, `powershell -c`, ...).

The checker parses shell, not Python or Perl: here it looks for the few
capabilities that make inline code hostile - a network socket together with
process execution or descriptor plumbing (a reverse shell), forking in a loop
(a fork bomb), decoding hidden code and running it, downloading code and
running it - and rates the rest by what it can do (run programs, delete files).
"""
from __future__ import annotations

import re

from .rating import DANGEROUS, MODERATE, Env

_NETWORK = re.compile(r"socket|fsockopen|tcpsocket|tcpclient|net\.connect|net\.socket|createconnection|/dev/tcp/|"
                      r"/dev/udp/|/inet/|io::socket|sockets\.tcpclient|websocket|pfsockopen|"
                      r"require\(\s*['\"](?:net|dgram|tls)['\"]\s*\)", re.I)
_PROCESS = re.compile(r"subprocess|os\.system|os\.popen|os\.exec|pty\.spawn|child_process|\bexec\w*\s*\(|"
                      r"\bsystem\s*\(|popen|\bspawn|proc_open|shell_exec|passthru|invoke-expression|\biex\b|"
                      r"start-process|`[^`]+`|\bqx\b|kernel\.exec|io\.popen|runtime\.getruntime", re.I)
_PLUMBING = re.compile(r"dup2|fileno\s*\(|<&|>&|\bstdin\b.*\bstdout\b", re.I)
_FORK = re.compile(r"\bfork\b|os\.fork|process\.fork|pcntl_fork", re.I)
_LOOP = re.compile(r"\bwhile\b|\bloop\b|\bfor\b|\buntil\b|\brepeat\b", re.I)
_DECODE = re.compile(r"b64decode|base64|frombase64string|decode\s*\(\s*['\"]hex|unhexlify|\batob\s*\(|unpack\s*\(|"
                     r"codecs\.decode|zlib\.decompress|marshal\.loads|pickle\.loads", re.I)
_RUN_CODE = re.compile(r"\bexec\s*\(|\beval\s*\(|\biex\b|invoke-expression|\bcompile\s*\(|function\s*\(|"
                       r"\bsystem\s*\(|new\s+function|scriptblock", re.I)
_DOWNLOAD = re.compile(r"urlopen|urllib|requests\.get|http\.get|fetch\s*\(|downloadstring|downloadfile|webclient|"
                       r"invoke-webrequest|\biwr\b|invoke-restmethod|\birm\b|net::http|open-uri|lwp::|"
                       r"file_get_contents\s*\(\s*['\"]https?:", re.I)
_DELETE = re.compile(r"rmtree|os\.remove|os\.unlink|os\.rmdir|unlink\s*\(|rm_rf|rmsync|rimraf|fs\.rm\b|"
                     r"remove-item|\brmdir\b|file\.delete|fileutils\.rm|shutil\.move", re.I)
_SHELL_WORDS = re.compile(r"/bin/(?:ba|z|da|k)?sh\b|cmd\.exe|powershell", re.I)


def check_inline(code: str, language: str, env: Env) -> None:
    network = bool(_NETWORK.search(code))
    process = bool(_PROCESS.search(code)) or bool(_SHELL_WORDS.search(code))
    if network and (process or _PLUMBING.search(code)):
        env.block(f"the {language} code opens a network connection and runs programs or plumbs descriptors "
                  "(a reverse shell pattern)")
    if _FORK.search(code) and _LOOP.search(code):
        env.block(f"the {language} code forks in a loop (a fork bomb)")
    if _DECODE.search(code) and _RUN_CODE.search(code):
        env.block(f"the {language} code decodes hidden content and runs it")
    if _DOWNLOAD.search(code) and _RUN_CODE.search(code):
        env.block(f"the {language} code downloads code and runs it")
    if process:
        env.rate(DANGEROUS, f"the {language} code runs other programs")
    if _DELETE.search(code):
        env.rate(DANGEROUS, f"the {language} code deletes or moves files")
    if network:
        env.rate(MODERATE, f"the {language} code uses the network")
    env.rate(MODERATE, f"runs inline {language} code")
