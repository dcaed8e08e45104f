"""Permission policies: ``always_allow``, ``always_ask`` and the ``auto`` classifier.

:func:`evaluate` turns a tool's resolved policy into a :class:`Verdict` carrying the wire
``evaluation`` object of ``agent.tool_use`` / ``agent.mcp_tool_use`` events. ``auto`` asks a
classifier (by default :class:`AutoClassifier`; any object with a ``classify(tool_name,
tool_input) -> Judgement`` method can be passed instead).

:class:`AutoClassifier` is rule-based and conservative: it allows what it recognises as safe
work inside the workspace, denies what it recognises as destructive, and asks otherwise.
Reason codes (an open registry, as on the hosted service):

==================== ====== =================================================================
code                 result when
==================== ====== =================================================================
``high_risk``        deny   destructive or system-level: ``rm -rf /``, ``mkfs``, ``dd of=/dev/…``,
                            fork bombs, ``curl … | sh``, shutdown/reboot, ``kill -9 -1``, …
``credential_access`` ask   secrets: ``~/.ssh``, ``.aws/credentials``, ``.env`` files, ``printenv``,
                            ``$…TOKEN`` variables, URLs with a password, …
``privilege_escalation`` ask ``sudo``, ``su``, ``doas``, ``mount``, ``systemctl``, …
``outside_workspace`` ask   a write (or a file tool path) outside the workspace and ``/tmp``
``package_install``  ask    ``pip install``, ``npm install``, ``apt-get install``, ``cargo add``, …
``network_access``   ask    ``curl``, ``wget``, ``ssh``, ``git clone/push``, a fetch of a private
                            or non-http URL, …
``indeterminate``    ask    anything not recognised (unknown programs, ``eval``, unparsable
                            commands, tools other than the built-in toolset)
==================== ====== =================================================================

Read-only tools (``read``, ``glob``, ``grep``, ``web_search``) and public ``web_fetch`` URLs are
allowed. When several rules match, deny wins, then the asks in the order of the table.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

Permission = Literal["allow", "ask", "deny"]
ASK_ORDER = (
    "credential_access",
    "privilege_escalation",
    "outside_workspace",
    "package_install",
    "network_access",
    "indeterminate",
)


@dataclass(frozen=True)
class Verdict:
    permission: Permission
    evaluation: dict[str, Any] | None
    """The wire ``evaluation``: ``{"type":"always_allow"}`` | ``{"type":"always_ask"}`` |
    ``{"type":"auto","evaluated_permission":{"type":"allow"} | {"type":"ask"|"deny",
    "reason_code"}}``; ``None`` for a disabled tool."""
    detail: str | None = None
    """Why (for logs and the synthetic error result of a denied call); not on the wire."""


@dataclass(frozen=True)
class Judgement:
    """A classifier's answer for one call."""

    permission: Permission
    reason_code: str | None = None
    detail: str | None = None


class Classifier(Protocol):
    def classify(self, tool_name: str, tool_input: dict[str, Any]) -> Judgement: ...


def evaluate(
    policy: dict[str, Any] | None,
    tool_name: str,
    tool_input: dict[str, Any],
    classifier: Classifier | None = None,
) -> Verdict:
    """None policy (disabled tool) → deny with evaluation None. always_allow/always_ask map
    directly. auto → the classifier (:class:`AutoClassifier` when none is given)."""
    if policy is None:
        return Verdict("deny", None, f"{tool_name} is not enabled for this agent")
    kind = policy.get("type")
    if kind == "always_allow":
        return Verdict("allow", {"type": "always_allow"})
    if kind == "always_ask":
        return Verdict("ask", {"type": "always_ask"})
    if kind != "auto":
        raise ValueError(f"unknown permission policy {kind!r}")
    judgement = (classifier or AutoClassifier()).classify(tool_name, tool_input)
    evaluated: dict[str, Any] = {"type": judgement.permission}
    if judgement.permission != "allow":
        evaluated["reason_code"] = judgement.reason_code or "indeterminate"
    return Verdict(
        judgement.permission, {"type": "auto", "evaluated_permission": evaluated}, judgement.detail
    )


def denied_text(tool_name: str, verdict: Verdict) -> str:
    """The text of the synthetic error result recorded for a denied call."""
    why = f": {verdict.detail}" if verdict.detail else ""
    return f"{tool_name}: denied by the permission policy{why}"


# --------------------------------------------------------------------------- rules


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Where the agent's commands may write besides the workspace (not files we create ourselves).
_SCRATCH = ("/tmp", "/var/tmp", "/dev/null", "/dev/stdout", "/dev/stderr", "/dev/fd", "/dev/tty")  # noqa: S108
_CRITICAL = _words(
    "/ /* ~ ~/ ~/* $HOME ${HOME} $HOME/ /bin /boot /dev /etc /home /lib /lib64 /opt /proc /root "
    "/sbin /srv /sys /usr /var /usr/bin /usr/lib /usr/local"
)
_CREDENTIAL_PATH = re.compile(
    r"(^|/|~)(\.ssh(/|$)|id_(rsa|dsa|ecdsa|ed25519)\b|\.aws/(credentials|config)|\.netrc$|\.pgpass$"
    r"|\.git-credentials$|\.docker/config\.json|\.kube/config|\.gnupg(/|$)|\.npmrc$|\.pypirc$"
    r"|\.env(\.[\w.-]+)?$|/etc/(shadow|gshadow|sudoers)|/proc/[^/\s]+/environ|\.config/gh/hosts)"
)
_SECRET_VAR = re.compile(r"\$\{?\w*(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE_KEY|CREDENTIAL)\w*", re.I)
_HIGH_RISK_TEXT = (
    (re.compile(r"(\w+|:)\s*\(\)\s*\{[^}]*\1\s*\|\s*\1\s*&"), "fork bomb"),
    (
        re.compile(
            r"\b(curl|wget|fetch)\b[^|;&\n]*\|\s*(sudo\s+)?(env\s+)?"
            r"(ba|z|da|k|c|tc|fi)?sh\b|\b(curl|wget)\b[^|;&\n]*\|\s*(sudo\s+)?(python\d*|perl|ruby|node)\b"
        ),
        "pipes a download into an interpreter",
    ),
    (
        re.compile(r"\b(ba|z|da)?sh\s+(-c\s+)?[\"']?(<\(|\$\()\s*(curl|wget)\b"),
        "runs a downloaded script",
    ),
    (re.compile(r"(eval|source|\.)\s+[\"']?\$\(\s*(curl|wget)\b"), "runs a downloaded script"),
    (re.compile(r"--no-preserve-root"), "rm --no-preserve-root"),
    (
        re.compile(r"\brm\s+(-[\w-]+\s+)*(/|/\*|~/?|\$HOME/?|\$\{HOME\}/?)(?=$|[\s;&|'\")])"),
        "deletes the root or home directory",
    ),
    (re.compile(r">\s*/dev/(sd|hd|vd|xvd|nvme|mmcblk|disk)\w*"), "writes to a block device"),
    (re.compile(r">\s*/etc/(passwd|shadow|sudoers|group)\b"), "overwrites a system account file"),
)
_DESTRUCTIVE = _words(
    "mkfs mke2fs mkswap wipefs fdisk sfdisk cfdisk gdisk parted shutdown reboot halt poweroff "
    "telinit killall5"
)
_PRIVILEGED = _words(
    "sudo su doas pkexec chroot mount umount systemctl service useradd userdel usermod groupadd "
    "passwd visudo setcap insmod rmmod modprobe iptables nft"
)
_NETWORK = _words(
    "curl wget nc ncat netcat telnet ssh scp sftp ftp socat nmap ping dig nslookup host http https "
    "xh aria2c lynx w3m links gh"
)
_CLOUD = _words("aws gcloud az kubectl doctl heroku vault op")
_SAFE = _words(
    "ls cat head tail less more wc echo printf pwd cd pushd popd true false test [ [[ date whoami id "
    "uname hostname which type file stat du df tree find grep egrep fgrep rg ag sort uniq cut tr awk "
    "sed diff cmp comm basename dirname realpath readlink jq yq xxd od hexdump md5sum sha1sum "
    "sha256sum sha512sum seq sleep export unset alias unalias history ps free uptime nproc column "
    "fold fmt nl paste join rev tac expand unexpand iconv base64 strings tee touch mkdir rmdir rm cp "
    "mv ln chmod truncate install tar unzip zip gzip gunzip bzip2 xz unxz zcat patch split "
    "python python3 node deno ruby perl php lua make cmake ninja gcc g++ cc c++ clang clang++ ld "
    "rustc javac java kotlinc scalac go cargo mvn gradle pytest tox nox ruff mypy black isort flake8 "
    "pylint tsc eslint prettier jest vitest mocha sqlite3 git npm yarn pnpm bun uv poetry pip pip3 "
    "pipx npx conda gem bundle composer dotnet swift ghc stack cabal time nice nohup timeout wait "
    "read local return exit source . : shift getopts trap umask ulimit command builtin let declare "
    "typeset printenv env set xargs watch"
)
_WHOLE_WORKSPACE = frozenset({".", "./", "*", "./*", ".*"})
_WRITERS = _words("touch mkdir rm rmdir cp mv ln chmod truncate install tee patch")
_WRAPPERS = _words("time nice nohup command builtin exec xargs watch")
_INSTALL_VERBS: dict[str, frozenset[str]] = {
    "pip": frozenset({"install", "download", "wheel"}),
    "pip3": frozenset({"install", "download", "wheel"}),
    "npm": frozenset({"install", "i", "add", "ci", "update", "exec"}),
    "yarn": frozenset({"add", "install", "dlx", "upgrade"}),
    "pnpm": frozenset({"add", "install", "i", "dlx", "update"}),
    "bun": frozenset({"add", "install", "i", "x"}),
    "cargo": frozenset({"install", "add", "fetch", "update"}),
    "go": frozenset({"get", "install"}),
    "gem": frozenset({"install", "update"}),
    "bundle": frozenset({"install", "update", "add"}),
    "composer": frozenset({"install", "require", "update"}),
    "conda": frozenset({"install", "create", "update"}),
    "pipx": frozenset({"install", "run"}),
    "poetry": frozenset({"add", "install", "update"}),
    "uv": frozenset({"add", "sync", "pip", "tool"}),
    "apt": frozenset({"install", "update", "upgrade"}),
    "apt-get": frozenset({"install", "update", "upgrade", "dist-upgrade"}),
    "yum": frozenset({"install", "update"}),
    "dnf": frozenset({"install", "update"}),
    "apk": frozenset({"add", "update"}),
    "brew": frozenset({"install", "upgrade"}),
    "dotnet": frozenset({"add", "restore"}),
}
_GIT_NETWORK = frozenset({"clone", "fetch", "pull", "push", "ls-remote", "submodule", "remote"})
_SEPARATORS = frozenset({";", "&", "&&", "|", "||", "|&", "(", ")", ";;", "((", "))"})
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_]\w*)\1[^\n]*\n(.*?)(?:\n\s*\2\s*(?=\n|$)|\Z)", re.S)
_SHELL_HEREDOC = re.compile(r"\b(ba|z|da)?sh\s+(-s\s+)?<<")
_SUBST = re.compile(r"\$\(([^()]*)\)|`([^`]*)`")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")


class _Findings:
    def __init__(self) -> None:
        self.deny: str | None = None
        self.asks: dict[str, str] = {}

    def ask(self, code: str, detail: str) -> None:
        self.asks.setdefault(code, detail)

    def judgement(self) -> Judgement:
        if self.deny is not None:
            return Judgement("deny", "high_risk", self.deny)
        for code in ASK_ORDER:
            if code in self.asks:
                return Judgement("ask", code, self.asks[code])
        return Judgement("allow")


class AutoClassifier:
    """The built-in rule-based ``auto`` classifier (see the module docstring).

    ``workdir``, when given, lets absolute paths inside the workspace count as inside.
    """

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = workdir

    def classify(self, tool_name: str, tool_input: dict[str, Any]) -> Judgement:
        findings = _Findings()
        if tool_name == "bash":
            command = tool_input.get("command")
            if isinstance(command, str) and command.strip():
                self._bash(command, findings, depth=0)
            elif not tool_input.get("restart"):
                findings.ask("indeterminate", "no command")
        elif tool_name in ("read", "glob", "grep"):
            for key in ("file_path", "path"):
                if isinstance(tool_input.get(key), str):
                    self._file_path(tool_input[key], findings, write=False)
        elif tool_name in ("write", "edit"):
            path = tool_input.get("file_path")
            if isinstance(path, str):
                self._file_path(path, findings, write=True)
            else:
                findings.ask("indeterminate", "no file_path")
        elif tool_name == "web_fetch":
            self._url(tool_input.get("url"), findings)
        elif tool_name != "web_search":
            findings.ask("indeterminate", f"no rules for tool {tool_name!r}")
        return findings.judgement()

    # ------------------------------------------------------------------- paths and URLs

    def _inside(self, path: str) -> bool:
        if path.startswith("~") or path.startswith("$"):
            return False
        if not path.startswith("/"):
            return ".." not in PurePosixPath(path).parts or _normalises_inside(path)
        if any(path == s or path.startswith(s + "/") for s in _SCRATCH):
            return True
        return self.workdir is not None and _normalises_under(path, str(self.workdir))

    def _file_path(self, path: str, findings: _Findings, *, write: bool) -> None:
        if _CREDENTIAL_PATH.search(path):
            findings.ask("credential_access", f"{path} looks like a credential file")
        if not self._inside(path):
            findings.ask("outside_workspace", f"{path} is outside the workspace")

    def _url(self, url: Any, findings: _Findings) -> None:
        if not isinstance(url, str):
            findings.ask("indeterminate", "no url")
            return
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError:
            findings.ask("indeterminate", "unparsable url")
            return
        if parts.password:
            findings.ask("credential_access", "the URL carries a password")
        if parts.scheme not in ("http", "https") or not host:
            findings.ask("network_access", f"{parts.scheme or 'no'} scheme")
        elif host == "localhost" or host.endswith((".local", ".internal", ".localhost", ".lan")):
            findings.ask("network_access", f"{host} is a local host name")
        else:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                return
            if not ip.is_global:
                findings.ask("network_access", f"{host} is not a public address")

    # ------------------------------------------------------------------- bash

    def _bash(self, command: str, findings: _Findings, *, depth: int) -> None:
        if depth > 3:
            findings.ask("indeterminate", "deeply nested command")
            return
        for pattern, what in _HIGH_RISK_TEXT:
            if pattern.search(command):
                findings.deny = findings.deny or what
        if _SECRET_VAR.search(command):
            findings.ask("credential_access", "references a secret-looking variable")
        text = command.replace("\\\n", " ")
        if _SHELL_HEREDOC.search(text):  # a here-document fed to a shell is more commands
            for match in _HEREDOC.finditer(text):
                self._bash(match.group(3), findings, depth=depth + 1)
        text = _HEREDOC.sub("\n", text)
        for match in _SUBST.finditer(text):
            self._bash(match.group(1) or match.group(2) or "", findings, depth=depth + 1)
        lexer = shlex.shlex(text.replace("\n", " ; "), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:
            findings.ask("indeterminate", "the command could not be parsed")
            return
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token in _SEPARATORS:
                if segment:
                    self._simple(segment, findings, depth)
                segment = []
            else:
                segment.append(token)

    def _simple(self, tokens: list[str], findings: _Findings, depth: int) -> None:
        words: list[str] = []
        redirect = False
        for token in tokens:
            if set(token) <= set("<>&|;()") and ">" in token:
                redirect = True
                continue
            if set(token) <= set("<>&|;()"):
                continue
            if redirect:
                redirect = False
                if not token.isdigit() and not self._inside(token):
                    findings.ask("outside_workspace", f"redirects output to {token}")
                continue
            words.append(token)
        while words and _ASSIGNMENT.match(words[0]):
            words.pop(0)
        if not words:
            return
        for word in words:
            if _CREDENTIAL_PATH.search(word):
                findings.ask("credential_access", f"touches {word}")
        self._program(words, findings, depth)

    def _program(self, words: list[str], findings: _Findings, depth: int) -> None:
        name = words[0].rsplit("/", 1)[-1]
        args = words[1:]
        if name in _WRAPPERS or name in ("env", "timeout", "nice"):
            rest = _strip_wrapper(name, args)
            if rest:
                self._program(rest, findings, depth)
            elif name == "env":
                findings.ask("credential_access", "prints the environment")
            return
        if name in ("bash", "sh", "zsh", "dash") and "-c" in args:
            index = args.index("-c") + 1
            if index < len(args):
                self._bash(args[index], findings, depth=depth + 1)
            return
        if name in ("eval", "exec"):
            self._bash(" ".join(args), findings, depth=depth + 1)
            return
        if name in _DESTRUCTIVE or (name == "init" and args[:1] in (["0"], ["6"])):
            findings.deny = findings.deny or f"{name} is destructive"
            return
        if name.startswith("mkfs"):
            findings.deny = findings.deny or f"{name} formats a filesystem"
            return
        if name == "dd" and any(a.startswith("of=/dev/") and not self._inside(a[3:]) for a in args):
            findings.deny = findings.deny or "dd writes to a device"
            return
        if name in ("rm", "chmod", "chown") and _recursive(args) and _hits_critical(args):
            findings.deny = findings.deny or f"recursive {name} on a system directory"
            return
        if name == "find":
            if _hits_critical(args[:1]) and ("-delete" in args or "-exec" in args):
                findings.deny = findings.deny or "find deletes from a system directory"
                return
            for flag in ("-exec", "-execdir", "-ok", "-okdir"):
                if flag in args:
                    inner = args[args.index(flag) + 1 :]
                    inner = inner[: next((i for i, a in enumerate(inner) if a in (";", "+")), len(inner))]
                    if inner:
                        self._program(inner, findings, depth + 1)
        if name in ("kill", "pkill") and "-1" in args:
            findings.deny = findings.deny or "kills every process"
            return
        if name in ("sudo", "doas", "pkexec"):
            findings.ask("privilege_escalation", f"{name} needs elevated privileges")
            rest = _strip_sudo(args)
            if rest:
                self._program(rest, findings, depth)
            return
        if name in _PRIVILEGED or name == "chown":
            findings.ask("privilege_escalation", f"{name} needs elevated privileges")
            return
        if name in _CLOUD:
            findings.ask("credential_access", f"{name} uses cloud credentials")
            return
        if name in ("printenv",) or (name in ("set", "export", "declare") and args in ([], ["-p"], ["-x"])):
            findings.ask("credential_access", "prints the environment")
            return
        if name in _NETWORK or (name == "rsync" and any(":" in a for a in args)):
            findings.ask("network_access", f"{name} reaches the network")
            return
        if name == "git" and _subcommand(args) in _GIT_NETWORK:
            findings.ask("network_access", f"git {_subcommand(args)} reaches the network")
            return
        if name == "git" and _subcommand(args) in ("credential", "config") and "credential" in " ".join(args):
            findings.ask("credential_access", "git credentials")
            return
        if self._installs(name, args):
            findings.ask("package_install", f"{name} installs packages")
            return
        if name == "rm" and _recursive(args) and any(a in _WHOLE_WORKSPACE for a in args):
            findings.ask("indeterminate", "deletes the whole working directory")
            return
        if name in _WRITERS or (name == "sed" and any(a.startswith("-i") for a in args)):
            for arg in args:
                if not arg.startswith("-") and not self._inside(arg):
                    findings.ask("outside_workspace", f"{name} writes to {arg}")
            return
        if name == "cd":
            if args and not self._inside(args[0]) and args[0] != "-":
                findings.ask("outside_workspace", f"changes directory to {args[0]}")
            return
        if name not in _SAFE:
            findings.ask("indeterminate", f"unrecognised program {name!r}")

    def _installs(self, name: str, args: list[str]) -> bool:
        if name == "npx" or name == "pnpx" or name == "bunx":
            return True
        if name in ("python", "python3") and args[:2] == ["-m", "pip"]:
            return _subcommand(args[2:]) in _INSTALL_VERBS["pip"]
        if name == "uv" and _subcommand(args) == "run":
            return False
        verbs = _INSTALL_VERBS.get(name)
        return verbs is not None and _subcommand(args) in verbs


def _subcommand(args: list[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def _strip_wrapper(name: str, args: list[str]) -> list[str]:
    rest = list(args)
    while rest and (rest[0].startswith("-") or _ASSIGNMENT.match(rest[0])):
        rest.pop(0)
    if name == "timeout" and rest:
        rest.pop(0)  # the duration
    return rest


def _strip_sudo(args: list[str]) -> list[str]:
    rest = list(args)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in ("-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U") and rest:
            rest.pop(0)  # the flag's value
    return rest


def _recursive(args: list[str]) -> bool:
    return any(
        a == "--recursive" or (a.startswith("-") and not a.startswith("--") and ("r" in a or "R" in a))
        for a in args
    )


def _hits_critical(args: list[str]) -> bool:
    return any(a.rstrip("/") in _CRITICAL or a in _CRITICAL for a in args if not a.startswith("-"))


def _normalises_inside(path: str) -> bool:
    depth = 0
    for part in PurePosixPath(path).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


def _normalises_under(path: str, root: str) -> bool:
    parts: list[str] = []
    for part in PurePosixPath(path).parts[1:]:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return PurePosixPath("/", *parts).is_relative_to(root)
