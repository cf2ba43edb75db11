"""The commands shown in README.md and docs/*.md stay true to the code.

Every `python <script>.py ...` (also `python3`, and `torchrun ... <script>.py`) in a code block or in inline code is
collected, with its backslash continuations. Each documented script then runs `--help` (in the repository root),
which must exit 0 and list every `--flag` the documents give that script. train.py and test.py list a model's,
generator's and dataset's own flags only when `--model`, `--netG` and `--dataset_mode` are given, so their `--help`
runs once per documented combination of those three. Each script gets one subprocess, which runs all its `--help`s
in turn (importing torch once), and two scripts run at a time.

Two kinds of flags are not in their script's own `--help`, and are looked up elsewhere:
- compare.py, benchmark.py and benchmark_ingredients.py hand the flags they do not know to the train/test options
  parser (PASS_THROUGH), as do the values of compare.py's `--model_args NAME="FLAGS"`: those are looked up in the
  `--help` of train.py and test.py;
- a few flags are hidden from `--help` on purpose (`help=argparse.SUPPRESS`); a flag declared so in the source passes.

The links are checked too: every docs/ page exists where README.md links it, every docs/*.md page is linked from
README.md, and every relative link (and its #anchor) between the pages resolves.

The helpers take the repository root and the list of markdown files, so that a scratch copy with a broken command
shows the failure (test_a_flag_the_script_does_not_know_is_reported).
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELP_TIMEOUT = 120                       # seconds for a script's first --help (torch's import: 2-3 s idle)
WORKERS = 2
COMBO_FLAGS = ('--model', '--netG', '--dataset_mode')   # flags that add flags to train.py's and test.py's --help
COMBO_SCRIPTS = ('train.py', 'test.py')
OPTIONS_SCRIPTS = ('train.py', 'test.py')               # where PASS_THROUGH flags are looked up
PASS_THROUGH = ('scripts/compare.py', 'scripts/benchmark.py', 'scripts/benchmark_ingredients.py')
SEPARATORS = {';', '&&', '||', '|', '&', '(', ')'}
FLAG = re.compile(r'--[A-Za-z][\w-]*')


@dataclass
class Flag:
    name: str
    file: str
    line: int
    command: str
    pass_through: bool = False      # a --model_args value: train.py's and test.py's, not the script's


@dataclass
class Command:
    script: str                     # as written, e.g. scripts/predict.py
    combo: tuple = ()               # (('--model', 'mrnet'), ('--netG', 'transunet'), ...) for train.py / test.py
    flags: list = field(default_factory=list)


def markdown_files(root: Path) -> list[Path]:
    """README.md and every docs/*.md of a repository."""
    return [root / 'README.md', *sorted((root / 'docs').glob('*.md'))]


def code_snippets(text: str) -> list[list[tuple[int, str]]]:
    """The code of a markdown text as logical lines: each a list of (line number, physical line) joined by trailing
    backslashes. Code is a fenced block, an indented block (4 spaces after a blank line) or an inline `span`."""
    snippets, fence, in_indented, previous_blank = [], None, False, True
    pending: list[tuple[int, str]] = []
    for number, line in enumerate(text.split('\n'), 1):
        stripped = line.strip()
        if fence is None and stripped.startswith(('```', '~~~')):
            fence = stripped[:3]
            continue
        if fence is not None and stripped.startswith(fence):
            fence, pending = None, []
            continue
        in_indented = fence is None and line.startswith(('    ', '\t')) and (previous_blank or in_indented) and \
            bool(stripped)
        previous_blank = not stripped
        if fence is not None or in_indented:
            pending.append((number, line))
            if not line.rstrip().endswith('\\'):
                snippets.append(pending)
                pending = []
            continue
        pending = []
        for span in re.findall(r'`([^`]+)`', line):
            snippets.append([(number, span.replace('\\|', '|'))])
    return snippets


def split_words(command: str) -> list[str]:
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:              # an unbalanced quote: take the words as they are
        return command.split()


def script_start(segment: list[str]) -> int | None:
    """Index of the script in `python X.py ...`, `python3 X.py ...` or `torchrun [its flags] X.py ...`."""
    for i, word in enumerate(segment):
        if word in ('python', 'python3') and i + 1 < len(segment) and segment[i + 1].endswith('.py'):
            return i + 1
        if word == 'torchrun':
            return next((j for j in range(i + 1, len(segment)) if segment[j].endswith('.py')), None)
    return None


def commands_in(snippet: list[tuple[int, str]], name: str) -> list[Command]:
    """The python / torchrun commands of one logical line, each flag with the physical line it is written on."""
    segments = [[]]
    for word in split_words(' '.join(line.rstrip().rstrip('\\') for _, line in snippet)):
        if word in SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(word)
    found = []
    for segment in segments:
        start = script_start(segment)
        if start is None:
            continue
        script, args = segment[start], segment[start + 1:]
        command, combo, shown, row = Command(script=script), {}, ' '.join(segment), 0

        def add(flag_name: str, pass_through: bool = False) -> None:
            nonlocal row             # flags come in order: look for each from the line of the one before
            pattern = re.compile(re.escape(flag_name) + r'(?![\w-])')
            row = next((k for k in range(row, len(snippet)) if pattern.search(snippet[k][1])), row)
            command.flags.append(Flag(flag_name, name, snippet[row][0], shown, pass_through))

        for k, arg in enumerate(args):
            flag_name, eq, value = arg.partition('=')
            if FLAG.fullmatch(flag_name):
                add(flag_name)
                if flag_name in COMBO_FLAGS:
                    value = value if eq else (args[k + 1] if k + 1 < len(args) else '')
                    if value and not value.startswith('-'):
                        combo[flag_name] = value
            elif k > 0 and args[k - 1] == '--model_args' and eq:
                for inner in split_words(value):
                    if FLAG.fullmatch(inner):
                        add(inner, pass_through=True)
        if script in COMBO_SCRIPTS:
            command.combo = tuple((f, combo[f]) for f in COMBO_FLAGS if f in combo)
        found.append(command)
    return found


def documented_commands(files: list[Path], root: Path) -> list[Command]:
    commands = []
    for path in files:
        name = path.relative_to(root).as_posix()
        for snippet in code_snippets(path.read_text(encoding='utf-8')):
            commands.extend(commands_in(snippet, name))
    return commands


# Runs a script's --help once per argument list, in one process: torch is imported once per script, not once per
# (--model, --netG, --dataset_mode). Each run gets what `python <script> ...` gives it: sys.argv, the script's folder
# first on sys.path, __name__ == '__main__'; its exit status and output are collected.
DRIVER = r"""
import contextlib, io, json, os, runpy, sys, traceback
script, argvs = sys.argv[1], json.loads(sys.argv[2])
results = []
for argv in argvs:
    out = io.StringIO()
    sys.argv = [script, *argv]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            runpy.run_path(script, run_name='__main__')
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append([code, out.getvalue()])
sys.__stdout__.write('\n' + json.dumps(results))
"""


class Helps:
    """`python <script> [--model X --netG Y --dataset_mode Z] --help` for every documented (script, combo): one
    subprocess per script, WORKERS of them at a time."""

    def __init__(self, root: Path):
        self.root = root
        self.done: dict[tuple, tuple[int, str]] = {}
        self.runs = 0                   # subprocesses started

    def _run(self, script: str, combos: list[tuple]) -> list[tuple[int, str]]:
        argvs = [[*[part for pair in combo for part in pair], '--help'] for combo in combos]
        timeout = HELP_TIMEOUT + 30 * len(argvs)
        try:
            out = subprocess.run([sys.executable, '-c', DRIVER, script, json.dumps(argvs)], cwd=self.root,
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [(-1, f'timed out after {timeout} s')] * len(combos)
        try:
            return [tuple(result) for result in json.loads(out.stdout.rsplit('\n', 1)[-1])]
        except ValueError:              # the process died before it could report
            return [(out.returncode or -1, out.stdout + out.stderr)] * len(combos)

    def fetch(self, keys) -> None:
        by_script: dict[str, list[tuple]] = {}
        for script, combo in sorted(set(keys) - set(self.done)):
            by_script.setdefault(script, []).append(combo)
        work = sorted(by_script.items(), key=lambda item: -len(item[1]))     # the longest (train.py) first
        with ThreadPoolExecutor(WORKERS) as pool:
            for (script, combos), results in zip(work, pool.map(lambda item: self._run(*item), work)):
                self.done.update({(script, combo): result for combo, result in zip(combos, results)})
        self.runs += len(by_script)

    def knows(self, key: tuple, flag: str) -> bool:
        rc, text = self.done[key]
        return rc == 0 and re.search(r'(?<![\w-])' + re.escape(flag) + r'(?![\w-])', text) is not None


def hidden_flags(root: Path) -> set[str]:
    """Flags declared with help=argparse.SUPPRESS anywhere in the code (they exist but --help does not show them)."""
    hidden = set()
    call = re.compile(r"add_(?:argument|flag)\((?:[^()]|\([^()]*\))*?['\"](--[\w-]+)['\"](?:[^()]|\([^()]*\))*?"
                      r"SUPPRESS", re.S)
    for path in root.rglob('*.py'):
        if {'.git', 'tests'} & set(path.relative_to(root).parts):
            continue
        hidden.update(call.findall(path.read_text(encoding='utf-8', errors='replace')))
    return hidden


def shown(key: tuple) -> str:
    return ' '.join(['python', key[0], *[part for pair in key[1] for part in pair], '--help'])


def flag_problems(files: list[Path], root: Path = ROOT, helps: Helps | None = None) -> list[str]:
    """One message per documented flag that its script's --help does not list, per --help that fails, and per
    documented script that does not exist."""
    helps = helps or Helps(root)
    problems, commands = [], []
    for command in documented_commands(files, root):
        path = (root / command.script).resolve()
        if not path.is_relative_to(root.resolve()):
            continue                            # a tool outside the repository (../shared/tools/...)
        if path.is_file():
            commands.append(command)
        elif command.flags:
            problems.append(f'{command.flags[0].file}:{command.flags[0].line}: {command.script}: no such script')
        else:
            problems.append(f'{command.script}: no such script')
    keys = {(c.script, c.combo) for c in commands}
    helps.fetch(keys)
    for key in sorted(keys):
        rc, text = helps.done[key]
        if rc != 0:
            problems.append(f'`{shown(key)}` exits with {rc}:\n{text.strip()[-2000:]}')
    options_keys = [k for k in helps.done if k[0] in OPTIONS_SCRIPTS]
    hidden = None
    for command in commands:
        key = (command.script, command.combo)
        for flag in command.flags:
            if not flag.pass_through and helps.knows(key, flag.name):
                continue
            handed_on = flag.pass_through or command.script in PASS_THROUGH
            if handed_on and any(helps.knows(k, flag.name) for k in options_keys):
                continue
            hidden = hidden_flags(root) if hidden is None else hidden
            if flag.name in hidden:
                continue
            where = [] if flag.pass_through else [f'`{shown(key)}`']
            where += [f'any documented train.py/test.py --help ({len(options_keys)} combinations)'] if handed_on else []
            problems.append(f'{flag.file}:{flag.line}: {flag.name} is not in {" nor in ".join(where)}'
                            f'\n    (command: {flag.command})')
    return problems


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def link_problems(root: Path = ROOT) -> list[str]:
    """README links every docs/*.md page, every linked page exists, and relative links and anchors resolve."""
    problems = []
    readme = (root / 'README.md').read_text(encoding='utf-8')
    linked = {Path(m).as_posix() for m in re.findall(r'\]\((docs/[^)#\s]+)', readme)}
    pages = {p.relative_to(root).as_posix() for p in (root / 'docs').glob('*.md')}
    problems += [f'README.md links {p}, which does not exist' for p in sorted(linked - pages)]
    problems += [f'{p} is not linked from README.md' for p in sorted(pages - linked)]
    for path in markdown_files(root):
        name = path.relative_to(root).as_posix()
        text = path.read_text(encoding='utf-8')
        for number, line in enumerate(text.split('\n'), 1):
            for target in re.findall(r'\]\(([^)\s]+)\)', line):
                if re.match(r'[a-z]+:', target):
                    continue                    # http:, https:, mailto:
                file_part, _, anchor = target.partition('#')
                dest = (path.parent / file_part).resolve() if file_part else path
                if not dest.is_file():
                    problems.append(f'{name}:{number}: link to {target}: no such file')
                    continue
                if anchor and dest.suffix == '.md':
                    headings = re.findall(r'^#+\s+(.*)$', dest.read_text(encoding='utf-8'), re.M)
                    if anchor not in {slug(h) for h in headings}:
                        problems.append(f'{name}:{number}: link to {target}: no such heading')
    return problems


def test_documented_flags_are_in_help():
    helps = Helps(ROOT)
    problems = flag_problems(markdown_files(ROOT), ROOT, helps)
    assert not problems, 'documented commands the code does not take:\n' + '\n'.join(problems)
    assert helps.runs <= 15, f'{helps.runs} --help processes: keep the documented scripts few'


def test_docs_pages_are_linked():
    problems = link_problems(ROOT)
    assert not problems, '\n'.join(problems)


def test_commands_are_read_as_a_shell_reads_them():
    text = '\n'.join([
        'Inline: `python scripts/x.py --inline 1` and `--not_a_command`, a table `--a\\|--b`.',
        '',
        '```bash',
        'python train.py --model pix2pix --netG unet_256 DIR <name> \\',
        '    --lr 2e-4 --gan_mode=lsgan   # a comment --not_a_flag',
        'for i in 0 1; do python3 test.py --model mrnet --name f$i; done',
        'torchrun --nproc_per_node 2 train.py --norm syncbatch',
        'python scripts/compare.py --model_args resvit="--pretrained_G x.pth" --name t',
        'python -m pytest -q tests',
        '```',
        '',
        '    python scripts/evaluate.py --pred p/ \\',
        '        --gt g/',
    ])
    commands = []
    for snippet in code_snippets(text):
        commands.extend(commands_in(snippet, 'doc.md'))
    got = [(c.script, c.combo, [(f.name, f.line, f.pass_through) for f in c.flags]) for c in commands]
    assert got == [
        ('scripts/x.py', (), [('--inline', 1, False)]),
        ('train.py', (('--model', 'pix2pix'), ('--netG', 'unet_256')),
         [('--model', 4, False), ('--netG', 4, False), ('--lr', 5, False), ('--gan_mode', 5, False)]),
        ('test.py', (('--model', 'mrnet'),), [('--model', 6, False), ('--name', 6, False)]),
        ('train.py', (), [('--norm', 7, False)]),
        ('scripts/compare.py', (), [('--model_args', 8, False), ('--pretrained_G', 8, True), ('--name', 8, False)]),
        ('scripts/evaluate.py', (), [('--pred', 12, False), ('--gt', 13, False)]),
    ], got


def test_a_flag_the_script_does_not_know_is_reported(tmp_path):
    """A scratch repository whose page documents a flag its script lacks (and one hidden flag, which passes)."""
    (tmp_path / 'tool.py').write_text(
        'import argparse\n'
        'p = argparse.ArgumentParser()\n'
        'p.add_argument("--known")\n'
        'p.add_argument("--hidden", help=argparse.SUPPRESS)\n'
        'p.parse_args()\n')
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'README.md').write_text('See [the page](docs/page.md) and [nothing](docs/gone.md#x).\n')
    (tmp_path / 'docs' / 'page.md').write_text(
        '# Page\n\n```bash\npython tool.py --known 1 \\\n    --no_such_flag --hidden 2\n```\n'
        '[back](../README.md) [here](#page) [there](#nowhere)\n')
    (tmp_path / 'docs' / 'orphan.md').write_text('# Orphan\n')
    problems = flag_problems(markdown_files(tmp_path), tmp_path)
    assert len(problems) == 1 and problems[0].startswith(
        'docs/page.md:5: --no_such_flag is not in `python tool.py --help`'), problems
    links = link_problems(tmp_path)
    assert links == ['README.md links docs/gone.md, which does not exist',
                     'docs/orphan.md is not linked from README.md',
                     'README.md:1: link to docs/gone.md#x: no such file',
                     'docs/page.md:7: link to #nowhere: no such heading'], links


def unbound_visdom_servers(root: Path) -> list[str]:
    """Documented `visdom.server` starts without -bind_local (they would serve patient images to the network)."""
    problems = []
    for path in markdown_files(root):
        for snippet in code_snippets(path.read_text(encoding='utf-8')):
            command = ' '.join(line for _, line in snippet)
            if 'visdom.server' in command and '-bind_local' not in command.split():
                problems.append(f'{path.relative_to(root)}:{snippet[0][0]}: {command.strip()}')
    return problems


def test_documented_visdom_servers_listen_on_localhost_only(tmp_path):
    assert not unbound_visdom_servers(ROOT), '\n'.join(unbound_visdom_servers(ROOT))
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'README.md').write_text('Plots:\n\n```bash\npython -m visdom.server -port 8097\n```\n')
    assert unbound_visdom_servers(tmp_path) == ['README.md:4: python -m visdom.server -port 8097']
    from options.train_options import TrainOptions
    opt = TrainOptions().parse(['--gpu_ids', '-1', '--checkpoints_dir', str(tmp_path)], setup_device=False)
    assert opt.display_server == 'http://localhost'
