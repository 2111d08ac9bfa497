#!/usr/bin/python3
"""Randomized fault campaign for wisp's distributed jobs (classify and train).

For each run: start `wisp run JOB -np 2` (coordinator + mpirun + 2 worker ranks) on a
tiny random model, inject one fault at a random moment (a random fraction of the
reference run's progress, or a random time since start), let the run end, resume with
the same command until the job is complete (at most --resumes reruns), and compare the
result with an uninterrupted reference run:
  classify: every dataset of the HDF5 file bitwise equal to the reference (so every
            row exactly once, none lost, none differing), no journal/.partial left,
            exit status of the final run = the reference's (1: the data has corrupt files);
  train:    adapter/ and head/ byte-identical, metrics.jsonl equal line for line
            (timing fields dropped), final exit status 0.
Every attempt runs under a timeout; a run that outlives it is a hang: its process
tree, kernel stacks and gdb backtraces are dumped to the run's directory, and it is
killed. Outcomes per (job, fault kind) are summarised in a table (terminal + markdown).

Faults (job: c = classify, t = train):
  kill9_worker      c t  SIGKILL one worker rank (mpirun ends the world; `wisp run` relaunches)
  kill9_mpirun      c t  SIGKILL the mpirun (its ranks are orphaned)
  kill9_coord       c t  SIGKILL the coordinator (the run ends; a rerun resumes)
  kill9_coord_twice c t  SIGKILL the coordinator, then again at a random moment of the resume
  kill9_all         c t  SIGKILL every process of the run at once
  stop_worker       c t  SIGSTOP one worker rank for lease_timeout + 3 s, then SIGCONT
  sigterm           c t  SIGTERM to `wisp run` (a batch system's cancel)
  sigint_group      c t  SIGINT to the whole process group (Ctrl-C in a terminal)
  journal_truncate  c    kill -9 all, then cut the commit journal at a random byte
  journal_corrupt   c    kill -9 all, then overwrite 1-8 random bytes of its records
  metrics_torn      t    kill -9 all, then cut metrics.jsonl inside its last line
  disk_full         c t  output on a small tmpfs that is filled up (real ENOSPC)
  disk_ro           c t  LD_PRELOAD shim: every write to the output fails with EROFS
For disk_full and disk_ro the failing run must end with an error, not a signal
(exit status < 128); the disk is then repaired and the run resumed.

Usage: tests/fault/campaign.py [--runs-classify N] [--runs-train N] [--seed S]
         [--kinds-classify k,k] [--kinds-train k,k] [--markdown FILE] [--build DIR]
         [--keep] [--work DIR]
Environment defaults: FAULT_RUNS_CLASSIFY, FAULT_RUNS_TRAIN, FAULT_SEED,
FAULT_KINDS_CLASSIFY, FAULT_KINDS_TRAIN, BUILD. Exit status 0 when every injected
fault ended in an identical result, 1 otherwise, 2 on a setup failure.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

KINDS = {
    'classify': ['kill9_worker', 'kill9_mpirun', 'kill9_coord', 'kill9_coord_twice', 'kill9_all',
                 'stop_worker', 'sigterm', 'sigint_group', 'journal_truncate', 'journal_corrupt',
                 'disk_full', 'disk_ro'],
    'train': ['kill9_worker', 'kill9_mpirun', 'kill9_coord', 'kill9_coord_twice', 'kill9_all',
              'stop_worker', 'sigterm', 'sigint_group', 'metrics_torn', 'disk_full', 'disk_ro'],
}
H5_DATASETS = ['path', 'label', 'score', 'probs', 'logits', 'duration', 'status', 'error',
               'true_label', 'classes']
METRIC_TIMING = ('clips_per_s', 'time', 'seconds', 'wall')
LEASE = {'classify': 5.0, 'train': 10.0}

TINY = {"model_type": "whisper", "architectures": ["WhisperForAudioClassification"],
        "d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 128,
        "num_mel_bins": 80, "max_source_positions": 1500, "activation_function": "gelu",
        "classifier_proj_size": 32, "num_labels": 4, "decoder_layers": 1,
        "decoder_attention_heads": 4, "decoder_ffn_dim": 64}


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- processes

def proc_table():
    """pid -> (ppid, pgid, comm, state) for every process."""
    out = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index('(') + 1:s.rindex(')')]
        rest = s[s.rindex(')') + 2:].split()
        out[int(d)] = (int(rest[1]), int(rest[2]), comm, rest[0])
    return out


def descendants(root, table=None):
    table = table or proc_table()
    kids = {}
    for pid, (ppid, _, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def marked_pids(marker):
    """Processes whose environment carries WISP_FAULT_RUN=marker (ours, even if orphaned)."""
    key = ('WISP_FAULT_RUN=%s' % marker).encode()
    pids = []
    for d in os.listdir('/proc'):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open('/proc/%s/environ' % d, 'rb') as f:
                env = f.read().split(b'\0')
        except OSError:
            continue
        if key in env:
            pids.append(int(d))
    return pids


def find(root, comm):
    table = proc_table()
    return [p for p in descendants(root, table) if table.get(p, ('', '', ''))[2].startswith(comm)
            and table[p][3] != 'Z']


def kill_pids(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except OSError:
            pass


def dump_tree(marker, path):
    """Writes the process tree, wait channels, kernel stacks and gdb backtraces; returns
    one line: where each wisp process waits (its innermost wisp or MPI frame)."""
    pids = marked_pids(marker)
    table = proc_table()
    where = []
    with open(path, 'w') as f:
        f.write(subprocess.run(['ps', '-o', 'pid,ppid,pgid,stat,wchan:24,etime,args', '--forest',
                                '-p', ','.join(map(str, pids)) or '1'],
                               capture_output=True, text=True).stdout)
        for p in pids:
            f.write('\n==== pid %d\n' % p)
            for name in ('wchan', 'stack'):
                try:
                    with open('/proc/%d/%s' % (p, name)) as g:
                        f.write('-- %s: %s\n' % (name, g.read().strip()))
                except OSError:
                    pass
            try:
                bt = subprocess.run(['gdb', '-p', str(p), '-batch', '-ex', 'thread apply all bt 20'],
                                    capture_output=True, text=True, timeout=30).stdout
                f.write(bt[-6000:])
            except (OSError, subprocess.TimeoutExpired):
                f.write('(gdb failed)\n')
                bt = ''
            name = table.get(p, (0, 0, '?', ''))[2]
            if name.startswith('wisp-'):
                m = re.search(r' in (P?MPI_\w+|ompi_mpi_\w+)', bt) or re.search(r' in ((?:wisp|s)_\w+) ', bt)
                where.append('%s in %s' % (name.replace('wisp-coordinato', 'coordinator')
                                           .replace('wisp-worker', 'rank'), m.group(1) if m else '?'))
    return ', '.join(where)


class Attempt:
    """One `wisp run` in its own session, with a marker in its environment."""

    def __init__(self, cmd, env, outdir, name, marker):
        self.marker = marker
        self.out = os.path.join(outdir, name + '.out')
        self.err = os.path.join(outdir, name + '.err')
        env = dict(env, WISP_FAULT_RUN=marker)
        self.t0 = time.monotonic()
        with open(self.out, 'w') as o, open(self.err, 'w') as e:
            self.p = subprocess.Popen(cmd, stdout=o, stderr=e, env=env, start_new_session=True)
        self.pid = self.p.pid
        self.rc = None
        self.hung = False

    def running(self):
        return self.p.poll() is None

    def wait(self, timeout, dump_path):
        try:
            self.rc = self.p.wait(timeout=max(0.0, timeout - (time.monotonic() - self.t0)))
        except subprocess.TimeoutExpired:
            self.hung = True
            self.where = dump_tree(self.marker, dump_path)
            self.kill_all()
            self.rc = self.p.wait()
        self.t1 = time.monotonic()
        # stragglers (orphaned ranks of a killed mpirun): never leave one running
        deadline = time.monotonic() + 10
        while marked_pids(self.marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = marked_pids(self.marker)
        if left:
            self.stragglers = len(left)
            kill_pids(left, signal.SIGKILL)
        else:
            self.stragglers = 0
        return self.rc

    def kill_all(self):
        kill_pids(marked_pids(self.marker), signal.SIGCONT)
        kill_pids(marked_pids(self.marker), signal.SIGKILL)

    def summary(self):
        try:
            with open(self.out) as f:
                for line in f:
                    if line.startswith('{') and '"status"' in line:
                        return json.loads(line)
        except (OSError, ValueError):
            pass
        return {}


# ---------------------------------------------------------------- setup

def sh(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError('%s: exit %d\n%s' % (' '.join(cmd), r.returncode, r.stderr[-2000:]))
    return r


class Campaign:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.build = os.path.abspath(a.build)
        self.wisp = os.path.join(self.build, 'bin', 'wisp')
        self.w = a.work or tempfile.mkdtemp(prefix='wisp-fault-')
        os.makedirs(self.w, exist_ok=True)
        self.env = dict(os.environ, OMPI_MCA_rmaps_base_oversubscribe='1', OMPI_MCA_plm_rsh_agent='',
                        OMPI_MCA_mpi_yield_when_idle='1', OPENBLAS_NUM_THREADS='1')
        if os.geteuid() == 0:
            self.env.update(OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1')
        self.results = []   # dicts: job, kind, outcome, reason, recovery
        self.n = 0
        self.can_mount = None
        self.mounts = []

    # -- fixtures
    def setup(self):
        w = self.w
        with open(os.path.join(w, 'tiny.json'), 'w') as f:
            json.dump(TINY, f)
        sh([self.wisp, 'init-model', '--config', w + '/tiny.json', '-o', w + '/model', '--seed', '3'])
        sh([self.wisp, 'synth', '-o', w + '/data', '--classes', '4', '--per-class', '48', '--corrupt', '8',
            '--max-seconds', '3', '-q'])
        sh([self.wisp, 'train', '--model', w + '/model', '--preset', 'seq_bn', '--train',
            w + '/data/train.csv', '--truncate', '-o', w + '/trained', '--steps', '1', '--threads', '1'])
        # classify: the 200 files (8 corrupt) listed twice, so a run lasts long enough to be hit
        src = open(w + '/data/all_with_corrupt.csv').read().splitlines()
        with open(w + '/data/classify.csv', 'w') as f:
            f.write('\n'.join([src[0]] + src[1:] * 2) + '\n')
        self.n_rows = 2 * (len(src) - 1)
        with open(w + '/classify.json', 'w') as f:
            json.dump({"kind": "classify", "model": "model", "adapter": "trained/adapter",
                       "head": "trained/head", "manifest": "data/classify.csv", "output": "out.h5",
                       "classify": {"batch_size": 8, "truncate": True},
                       "cluster": {"shard_size": 8, "credit": 2, "lease_timeout": LEASE['classify'],
                                   "heartbeat": 0.5, "commit_interval": 0.2}}, f)
        with open(w + '/train.json', 'w') as f:
            json.dump({"kind": "train", "model": "model", "adapter_config": "seq_bn", "seed": 42,
                       "train_manifest": "data/train.csv", "val_manifest": "data/val.csv", "output": "run",
                       "train": {"epochs": 3, "global_batch": 16, "micro_batch": 8, "truncate": True,
                                 "checkpoint_every": self.a.checkpoint_every,
                                 "fixed_order_reduce": True},
                       "cluster": {"credit": 2, "lease_timeout": LEASE['train'], "heartbeat": 0.5}}, f)
        cc = shutil.which('cc') or 'gcc'
        shim_src = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fault_shim.c')
        self.shim = w + '/fault_shim.so'
        sh([cc, '-shared', '-fPIC', '-O1', '-o', self.shim, shim_src, '-ldl'])
        self.refs = {}
        for job in ('classify', 'train'):
            if self.a.runs[job] > 0:
                self.reference(job)

    def cmd(self, job, out):
        return [self.wisp, 'run', os.path.join(self.w, job + '.json'), '-np', '2', '--no-progress',
                '--set', 'output=' + out]

    def out_path(self, base, job):
        return os.path.join(base, 'out.h5' if job == 'classify' else 'run')

    def progress(self, job, out):
        """classify: bytes of the commit journal; train: step lines in metrics.jsonl."""
        try:
            if job == 'classify':
                return os.stat(out + '.commit').st_size
            with open(os.path.join(out, 'metrics.jsonl'), 'rb') as f:
                return f.read().count(b'"type":"step"')
        except OSError:
            return 0

    def reference(self, job):
        """Two uninterrupted runs: the reference, and a control that must equal it."""
        ref = {}
        for name in ('ref', 'control'):
            d = os.path.join(self.w, job + '-' + name)
            os.makedirs(d)
            out = self.out_path(d, job)
            at = Attempt(self.cmd(job, out), self.env, d, 'run', 'ref-%s-%d' % (job, os.getpid()))
            peak = 0
            while at.running():
                peak = max(peak, self.progress(job, out))
                time.sleep(0.01)
            rc = at.wait(600, d + '/hang.txt')
            s = at.summary()
            if s.get('status') != 'complete':
                raise RuntimeError('%s %s run: exit %d, not complete (see %s)' % (job, name, rc, at.err))
            if name == 'ref':
                if job == 'train':
                    peak = self.progress(job, out)
                ref = {'dir': d, 'out': out, 'rc': rc, 'secs': at.t1 - at.t0, 'peak': max(peak, 1),
                       'summary': s}
                self.refs[job] = ref
                log('reference %s: exit %d, %.1f s, progress %d' % (job, rc, ref['secs'], ref['peak']))
            else:
                why = self.compare(job, out, rc, s)
                if why:
                    raise RuntimeError('%s: two uninterrupted runs differ: %s' % (
                        job, '; '.join(d for _, d in why)))
                shutil.rmtree(d)
                log('control %s: equal to the reference' % job)

    # -- checks
    # Each check returns a list of problems (tag, detail): the tag names the kind of
    # damage (the table counts tags), the detail the figures of this run.
    def compare(self, job, out, rc, summary):
        """[] when the finished output equals the reference, else its problems."""
        ref = self.refs[job]
        probs = []
        if rc != ref['rc']:
            probs.append(('final exit status', 'final exit status %d, reference %d' % (rc, ref['rc'])))
        if job == 'classify':
            probs += self.compare_classify(out, summary)
        else:
            probs += self.compare_train(out)
        return probs

    def compare_classify(self, out, summary):
        ref = self.refs['classify']
        probs = []
        # the summary of the last (resumed) run must describe the whole file
        for k in ('items_total', 'items_done', 'errors'):
            if summary.get(k) != ref['summary'].get(k):
                probs.append(('summary %s of the resumed run' % k,
                              'summary %s = %s, reference %s' % (k, summary.get(k), ref['summary'].get(k))))
        if not os.path.exists(out):
            return probs + [('no final file', 'no final file')]
        for extra in ('.partial', '.commit', '.undo'):
            if os.path.exists(out + extra):
                probs.append(('leftover ' + extra, out + extra + ' left behind'))
        try:
            with h5py.File(ref['out'], 'r') as a, h5py.File(out, 'r') as b:
                for d in H5_DATASETS:
                    if d not in a:
                        continue
                    if d not in b:
                        probs.append(('dataset missing', 'dataset /%s missing' % d))
                        continue
                    x, y = a[d][()], b[d][()]
                    if x.shape != y.shape:
                        probs.append(('rows lost or duplicated', '/%s shape %s, reference %s' % (d, y.shape, x.shape)))
                        continue
                    if x.dtype.kind == 'f':
                        same = np.array_equal(x.view(np.uint8), y.view(np.uint8))
                    else:
                        same = np.array_equal(x, y)
                    if not same:
                        bad = np.nonzero((x != y).reshape(x.shape[0], -1).any(axis=1))[0]
                        probs.append(('rows differ', '/%s: %d rows differ (first row %d)' % (
                            d, len(bad), bad[0] if len(bad) else -1)))
                n = b['path'].shape[0]
                if n != self.n_rows:
                    probs.append(('rows lost or duplicated', '%d rows, expected %d' % (n, self.n_rows)))
                for k in ('n_rows', 'n_ok', 'n_error', 'n_missing'):
                    if k in a.attrs and a.attrs[k] != b.attrs.get(k):
                        probs.append(('file attribute ' + k, 'attribute %s = %s, reference %s' % (
                            k, b.attrs.get(k), a.attrs[k])))
        except OSError as e:
            probs.append(('unreadable output', 'unreadable output: %s' % e))
        return probs

    def compare_train(self, out):
        ref = self.refs['train']['out']
        probs = []
        for sub in ('adapter', 'head'):
            ra, rb = os.path.join(ref, sub), os.path.join(out, sub)
            if not os.path.isdir(rb):
                probs.append(('%s/ missing' % sub, sub + '/ missing'))
                continue
            if sorted(os.listdir(ra)) != sorted(os.listdir(rb)):
                probs.append(('%s/ files differ' % sub, sub + '/ holds other files'))
                continue
            for fn in os.listdir(ra):
                if open(os.path.join(ra, fn), 'rb').read() != open(os.path.join(rb, fn), 'rb').read():
                    probs.append(('%s/ not bitwise equal' % sub, '%s/%s differs from the reference' % (sub, fn)))

        def lines(p):
            rows = []
            for ln in open(p):
                try:
                    o = json.loads(ln)
                except ValueError:
                    return None, 'unparsable line %r' % ln[:60]
                for k in METRIC_TIMING:
                    o.pop(k, None)
                rows.append(o)
            return rows, ''
        a, _ = lines(os.path.join(ref, 'metrics.jsonl'))
        try:
            b, why = lines(os.path.join(out, 'metrics.jsonl'))
        except OSError:
            return probs + [('metrics.jsonl missing', 'metrics.jsonl missing')]
        if b is None:
            return probs + [('metrics.jsonl unparsable', 'metrics.jsonl: ' + why)]
        if a != b:
            ka = [(o.get('type'), o.get('step')) for o in a]
            kb = [(o.get('type'), o.get('step')) for o in b]
            lost = [k for k in ka if k not in kb]
            dup = len(kb) - len(set(kb))
            if lost:
                probs.append(('metrics lines lost', 'metrics.jsonl: %d lines lost (%s)' % (
                    len(lost), ','.join('%s %s' % k for k in lost[:6]))))
            if dup:
                probs.append(('metrics lines duplicated', 'metrics.jsonl: %d lines duplicated' % dup))
            if not lost and not dup:
                probs.append(('metrics values differ', 'metrics.jsonl: values differ from the reference'))
        return probs

    # -- one run
    def trigger_wait(self, at, job, out, ref):
        """Waits for the random moment; False when the run ended first."""
        if self.rng.random() < 0.25:
            t = self.rng.uniform(0.0, 0.9 * ref['secs'])
            while at.running() and time.monotonic() - at.t0 < t:
                time.sleep(0.005)
        else:
            goal = self.rng.uniform(0.03, 0.85) * ref['peak']
            while at.running() and self.progress(job, out) < goal:
                if time.monotonic() - at.t0 > self.timeout(job):
                    break
                time.sleep(0.005)
        return at.running()

    def timeout(self, job):
        return max(75.0, 10 * self.refs[job]['secs'])

    def victim(self, at, comm):
        """A random live process named comm below the attempt (waits up to 3 s for one)."""
        end = time.monotonic() + 3
        while time.monotonic() < end and at.running():
            c = find(at.pid, comm)
            if c:
                return self.rng.choice(c)
            time.sleep(0.01)
        return None

    def inject(self, kind, at, job, out, d):
        """Applies the fault to a running attempt; returns a note, or None when missed."""
        if kind == 'kill9_worker' or kind == 'stop_worker':
            v = self.victim(at, 'wisp-worker')
            if v is None:
                return None
            if kind == 'kill9_worker':
                os.kill(v, signal.SIGKILL)
                return 'worker %d' % v
            os.kill(v, signal.SIGSTOP)
            end = time.monotonic() + LEASE[job] + 3
            while time.monotonic() < end and at.running():
                time.sleep(0.05)
            try:
                os.kill(v, signal.SIGCONT)
            except OSError:
                pass
            return 'worker %d stopped' % v
        if kind == 'kill9_mpirun':
            v = self.victim(at, 'mpirun')
            if v is None:
                return None
            os.kill(v, signal.SIGKILL)
            return 'mpirun %d' % v
        if kind.startswith('kill9_coord'):
            v = self.victim(at, 'wisp-coordinat')
            if v is None:
                return None
            os.kill(v, signal.SIGKILL)
            return 'coordinator %d' % v
        if kind in ('kill9_all', 'journal_truncate', 'journal_corrupt', 'metrics_torn'):
            if not at.running():
                return None
            kill_pids([at.pid] + descendants(at.pid), signal.SIGSTOP)   # freeze, then kill all
            at.kill_all()
            at.wait(30, d + '/hang-kill.txt')
            if kind == 'kill9_all':
                return 'all killed'
            return self.damage(kind, job, out)
        if kind == 'sigterm':
            if not at.running():
                return None
            os.kill(at.pid, signal.SIGTERM)
            return 'SIGTERM to wisp run'
        if kind == 'sigint_group':
            if not at.running():
                return None
            os.killpg(at.pid, signal.SIGINT)
            return 'SIGINT to the group'
        if kind == 'disk_full':
            if not at.running():
                return None
            fill = os.path.join(os.path.dirname(out), 'filler')
            try:
                with open(fill, 'wb') as f:
                    while True:
                        f.write(b'\0' * 65536)
            except OSError:
                pass
            return 'disk filled'
        if kind == 'disk_ro':
            if not at.running():
                return None
            open(d + '/ro-trigger', 'w').close()
            return 'file system read-only'
        raise ValueError(kind)

    def damage(self, kind, job, out):
        if kind == 'metrics_torn':
            p = os.path.join(out, 'metrics.jsonl')
            try:
                data = open(p, 'rb').read()
            except OSError:
                return 'no metrics.jsonl yet'
            start = data.rstrip(b'\n').rfind(b'\n') + 1
            cut = self.rng.randint(start, max(start, len(data) - 1))
            os.truncate(p, cut)
            return 'metrics.jsonl cut at %d of %d' % (cut, len(data))
        p = out + '.commit'
        try:
            data = bytearray(open(p, 'rb').read())
        except OSError:
            return 'no journal yet'
        head = data.find(b'JRWR')        # the first commit record (results.c: S_RECORD_MAGIC)
        if head < 0:
            return 'journal without records'
        if kind == 'journal_truncate':
            cut = self.rng.randint(head, len(data))
            os.truncate(p, cut)
            return 'journal cut at %d of %d' % (cut, len(data))
        k = self.rng.randint(1, 8)
        for _ in range(k):
            data[self.rng.randrange(head, len(data))] = self.rng.randrange(256)
        open(p, 'wb').write(data)
        return 'journal: %d bytes overwritten' % k

    def mount_tmpfs(self, d):
        mnt = os.path.join(d, 'fs')
        os.makedirs(mnt)
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt], capture_output=True)
        if r.returncode != 0:
            return None
        self.mounts.append(mnt)
        return mnt

    def umount(self, mnt, keep_to):
        if keep_to:
            shutil.copytree(mnt, keep_to, ignore=shutil.ignore_patterns('filler'), dirs_exist_ok=True)
        subprocess.run(['umount', '-l', mnt], capture_output=True)
        self.mounts.remove(mnt)

    def run_one(self, job, kind):
        """One fault run; returns the result dict or None when the fault missed its run."""
        self.n += 1
        d = os.path.join(self.w, 'runs', '%04d-%s-%s' % (self.n, job, kind))
        os.makedirs(d)
        ref = self.refs[job]
        env = dict(self.env)
        base = d
        mnt = None
        if kind == 'disk_full':
            mnt = self.mount_tmpfs(d)
            if mnt is None:
                return {'job': job, 'kind': kind, 'outcome': 'skipped',
                        'problems': [('cannot mount a tmpfs (not root?)', 'mount failed')]}
            base = mnt
        if kind == 'disk_ro':
            base = os.path.join(d, 'ro')
            os.makedirs(base)
            env.update(LD_PRELOAD=self.shim, WISP_FAULT_DIR=base, WISP_FAULT_TRIGGER=d + '/ro-trigger',
                       WISP_FAULT_ERRNO=str(30),
                       # a sanitizer build wants its runtime first in the preload list
                       ASAN_OPTIONS=':'.join(filter(None, [env.get('ASAN_OPTIONS'),
                                                           'verify_asan_link_order=0'])))
        out = self.out_path(base, job)
        marker = 'fault-%d-%d' % (os.getpid(), self.n)
        res = {'job': job, 'kind': kind, 'dir': d}
        try:
            res.update(self.drive(job, kind, d, out, env, marker, ref, mnt))
        finally:
            if mnt:
                self.umount(mnt, os.path.join(d, 'fs-copy') if res.get('outcome') != 'ok' else None)
        if res.get('outcome') == 'missed':
            shutil.rmtree(d, ignore_errors=True)
            return None
        if res['outcome'] == 'ok' and not self.a.keep:
            shutil.rmtree(d, ignore_errors=True)
        return res

    def drive(self, job, kind, d, out, env, marker, ref, mnt):
        tmo = self.timeout(job)
        at = Attempt(self.cmd(job, out), env, d, 'a0', marker + '-0')
        if not self.trigger_wait(at, job, out, ref):
            at.wait(tmo, d + '/hang-0.txt')
            return {'outcome': 'missed'}
        t_fault = time.monotonic()
        note = self.inject(kind, at, job, out, d)
        if note is None:
            at.wait(tmo, d + '/hang-0.txt')
            return {'outcome': 'missed'}
        rc = at.rc if at.rc is not None else at.wait(tmo, d + '/hang-0.txt')
        problems = []
        if at.hung:
            return {'outcome': 'hang', 'note': note, 'problems': [
                ('hang of the faulted run: ' + at.where, 'faulted run hung: %s/hang-0.txt' % d)]}
        if kind in ('disk_full', 'disk_ro'):
            if rc >= 128:
                problems.append(('failing run ended by signal %d' % (rc - 128),
                                 'failing run ended by signal %d (exit %d)' % (rc - 128, rc)))
            elif not error_line_naming(at.err, os.path.dirname(out)):
                problems.append(('no error line naming the output', 'exit %d, no E line naming %s' % (
                    rc, os.path.dirname(out))))
        if kind in ('sigterm', 'sigint_group') and rc not in (130, ref['rc']):
            problems.append(('interrupted run exit status not 130',
                             'interrupted run: exit %d (130 = interrupted, resumable)' % rc))
        if kind == 'disk_full':
            try:
                os.unlink(os.path.join(os.path.dirname(out), 'filler'))
            except OSError:
                pass
        env = dict(self.env)          # the disk is repaired for the resumes
        twice = kind == 'kill9_coord_twice'
        last = at
        for k in range(1, self.a.resumes + 1):
            # A coordinator killed after its summary (in its linger) finished the job;
            # a rerun must then find the file complete and recompute nothing, so a
            # killed attempt is always followed by one.
            killed = last.rc is not None and (last.rc < 0 or last.rc >= 128)  # Popen: -signal
            if last.summary().get('status') == 'complete' and not killed:
                break
            at = Attempt(self.cmd(job, out), env, d, 'a%d' % k, '%s-%d' % (marker, k))
            if twice:
                twice = False
                if self.trigger_wait(at, job, out, ref):
                    v = self.victim(at, 'wisp-coordinat')
                    if v:
                        os.kill(v, signal.SIGKILL)
                        note += ', again %d' % v
            at.wait(tmo, d + '/hang-%d.txt' % k)
            if at.hung:
                return {'outcome': 'hang', 'note': note, 'problems': problems + [
                    ('hang of a resume: ' + at.where, 'resume %d hung: %s/hang-%d.txt' % (k, d, k))]}
            last = at
        recovery = last.t1 - t_fault
        s = last.summary()
        if s.get('status') != 'complete':
            problems.append(('not complete after %d resumes' % self.a.resumes,
                             'not complete after %d resumes (last exit %s, %s)' % (
                                 self.a.resumes, last.rc, last_err_line(last.err))))
        else:
            problems += self.compare(job, out, last.rc, s)
        if problems:
            return {'outcome': 'FAIL', 'problems': problems, 'note': note, 'recovery': recovery}
        return {'outcome': 'ok', 'note': note, 'recovery': recovery}

    # -- campaign
    def plan(self, job):
        kinds = self.a.kinds[job]
        return [kinds[i % len(kinds)] for i in range(self.a.runs[job])]

    def run(self):
        for job in ('classify', 'train'):
            if self.a.runs[job] <= 0:
                continue
            todo = self.plan(job)
            self.rng.shuffle(todo)
            for i, kind in enumerate(todo):
                res = None
                for _ in range(4):           # a fault that missed its run (it ended first) is retried
                    res = self.run_one(job, kind)
                    if res is not None:
                        break
                if res is None:
                    res = {'job': job, 'kind': kind, 'outcome': 'missed',
                           'problems': [('run ended before the fault 4 times', 'missed')]}
                if res.get('problems'):
                    res['reason'] = '; '.join(dt for _, dt in res['problems'])
                self.results.append(res)
                rt = res.get('recovery')
                log('%-8s %3d/%d %-18s %-7s %6s  %s%s' % (
                    job, i + 1, len(todo), kind, res['outcome'], '%.1fs' % rt if rt is not None else '-',
                    res.get('note', ''), ('  -- ' + res['reason']) if res.get('reason') else ''))

    def table(self):
        rows = {}
        for r in self.results:
            rows.setdefault((r['job'], r['kind']), []).append(r)
        lines = ['| job | fault | runs | ok | fail | hang | median recovery (s) | failures |',
                 '|---|---|---|---|---|---|---|---|']
        for job in ('classify', 'train'):
            for kind in KINDS[job]:
                rs = rows.get((job, kind))
                if not rs:
                    continue
                cnt = lambda o: sum(1 for r in rs if r['outcome'] == o)
                rec = [r['recovery'] for r in rs if r.get('recovery') is not None and r['outcome'] == 'ok']
                reasons = {}
                for r in rs:
                    for tag, _ in r.get('problems', []):
                        reasons[tag] = reasons.get(tag, 0) + 1
                why = '; '.join('%s (%d)' % (k, v) if v > 1 else k for k, v in reasons.items())
                lines.append('| %s | %s | %d | %d | %d | %d | %s | %s |' % (
                    job, kind, len(rs), cnt('ok'), cnt('FAIL') + cnt('missed') + cnt('skipped'), cnt('hang'),
                    '%.1f' % statistics.median(rec) if rec else '-', why.replace('|', '/')))
        tot = len(self.results)
        ok = sum(1 for r in self.results if r['outcome'] == 'ok')
        lines.append('')
        lines.append('%d faults: %d ok, %d failed, %d hung (seed %d%s)' % (
            tot, ok, sum(1 for r in self.results if r['outcome'] not in ('ok', 'hang')),
            sum(1 for r in self.results if r['outcome'] == 'hang'), self.a.seed,
            ', ' + self.a.label if self.a.label else ''))
        return '\n'.join(lines)

    def cleanup(self):
        for m in list(self.mounts):
            subprocess.run(['umount', '-l', m], capture_output=True)


def error_line_naming(path, where):
    """1 when the log holds an error line (level E, or a tool's own failure line) naming
    a file under where."""
    marks = (' E ', 'failed', 'No space left', 'Read-only file system', 'error')
    try:
        return any(where in ln and any(m in ln for m in marks) for ln in open(path, errors='replace'))
    except OSError:
        return False


def last_err_line(path):
    try:
        ls = [ln.strip() for ln in open(path) if ln.strip()]
        return ls[-1][:200] if ls else 'no stderr'
    except OSError:
        return 'no stderr'


def main():
    e = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--runs-classify', type=int, default=int(e('FAULT_RUNS_CLASSIFY', '12')))
    p.add_argument('--runs-train', type=int, default=int(e('FAULT_RUNS_TRAIN', '8')))
    p.add_argument('--seed', type=int, default=int(e('FAULT_SEED', '1')))
    p.add_argument('--kinds-classify', default=e('FAULT_KINDS_CLASSIFY', ','.join(KINDS['classify'])))
    p.add_argument('--kinds-train', default=e('FAULT_KINDS_TRAIN', ','.join(KINDS['train'])))
    p.add_argument('--resumes', type=int, default=3)
    p.add_argument('--checkpoint-every', type=int, default=2,
                   help='train.checkpoint_every (2: a checkpoint falls on the end of epoch 2, step 18)')
    p.add_argument('--markdown', default='')
    p.add_argument('--build', default=e('BUILD', 'build'))
    p.add_argument('--work', default='')
    p.add_argument('--label', default='', help='text for the table footer (e.g. the commit tested)')
    p.add_argument('--keep', action='store_true', help='keep the directories of passing runs too')
    a = p.parse_args()
    a.runs = {'classify': a.runs_classify, 'train': a.runs_train}
    a.kinds = {}
    for job, s in (('classify', a.kinds_classify), ('train', a.kinds_train)):
        ks = [k for k in s.split(',') if k]
        bad = [k for k in ks if k not in KINDS[job]]
        if bad:
            p.error('unknown %s fault kinds: %s (known: %s)' % (job, ','.join(bad), ','.join(KINDS[job])))
        if not ks:
            a.runs[job] = 0
        a.kinds[job] = ks
    c = Campaign(a)
    log('fault campaign: %d classify + %d train faults, seed %d, work %s' % (
        a.runs['classify'], a.runs['train'], a.seed, c.w))
    t0 = time.monotonic()
    try:
        try:
            c.setup()
        except (RuntimeError, OSError) as ex:
            log('setup failed: %s' % ex)
            return 2
        c.run()
    finally:
        c.cleanup()
    t = c.table()
    log('\n' + t + '\n(%.0f s)' % (time.monotonic() - t0))
    if a.markdown:
        with open(a.markdown, 'w') as f:
            f.write(t + '\n')
    bad = [r for r in c.results if r['outcome'] not in ('ok', 'skipped')]
    if not bad and not a.keep and not a.work:
        shutil.rmtree(c.w, ignore_errors=True)
    elif bad:
        log('kept for inspection: %s' % c.w)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
