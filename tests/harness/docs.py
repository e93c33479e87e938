"""Reading the shell steps the documentation gives (README.md, deploy/*.md), so that tests
can check them against the code and run them as written."""

from __future__ import annotations

import re
import shlex


def code_blocks(markdown: str, heading: str | None = None) -> list[str]:
    """The fenced code blocks of the section under `heading` (up to the next heading), or
    of the whole text."""
    if heading is not None:
        start = markdown.index(heading + "\n")
        end = markdown.find("\n#", start + len(heading))
        markdown = markdown[start:end if end != -1 else None]
    return re.findall(r"```\w*\n(.*?)```", markdown, re.DOTALL)


def commands(block: str) -> list[list[str]]:
    """Each command of a shell block: lines joined at backslashes, split at `&&`, with
    comments and a leading sudo dropped."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, "&&"]:
            if word == "&&":
                if command:
                    out.append(command[1:] if command[0] == "sudo" else command)
                command = []
            else:
                command.append(word)
    return out
