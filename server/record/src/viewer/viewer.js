'use strict';
// Rewind's replay viewer. Everything shown here was computed by the server's own replay
// (`rewind-server review FILE html`) and embedded in this page; this script only decodes the
// columns and draws them. Every string from the recording goes into the page as text
// (textContent, canvas text), never as markup.
(function () {
  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  // ---- decoding ---------------------------------------------------------------------------

  // The blob holds one zlib stream per column, back to back.
  async function inflate(list, b64) {
    const bin = atob(b64.trim());
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    let at = 0;
    const parts = list.map((c) => {
      if (at + c.zlib > bytes.length) throw new Error('the data is cut short in ' + c.name);
      const stream = new Blob([bytes.subarray(at, at + c.zlib)]).stream().pipeThrough(new DecompressionStream('deflate'));
      at += c.zlib;
      return new Response(stream).arrayBuffer().then((b) => new Uint8Array(b));
    });
    if (at !== bytes.length) throw new Error('the data has ' + (bytes.length - at) + ' bytes left over');
    return Promise.all(parts);
  }

  function columns(list, parts) {
    const out = {};
    list.forEach((c, k) => {
      const raw = parts[k];
      if (c.kind === 'text') {
        const texts = new TextDecoder().decode(raw).split('\0');
        if (texts.length !== c.len) throw new Error('column ' + c.name + ' holds ' + texts.length + ' strings, not ' + c.len);
        out[c.name] = texts;
        return;
      }
      if (c.kind === 'u8') {
        if (raw.length !== c.len) throw new Error('column ' + c.name + ' holds ' + raw.length + ' bytes, not ' + c.len);
        out[c.name] = raw;
        return;
      }
      if (c.kind !== 'z' && c.kind !== 'd1' && c.kind !== 'd2') throw new Error('unknown column kind ' + c.kind);
      const order = c.kind === 'z' ? 0 : c.kind === 'd1' ? 1 : 2;
      const v = new Float64Array(c.len);
      let pos = 0;
      let prev = 0;
      let delta = 0;
      for (let i = 0; i < c.len; i++) {
        let u = 0;
        let mul = 1;
        let b;
        do {
          if (pos >= raw.length) throw new Error('the data is cut short in ' + c.name);
          b = raw[pos++];
          u += (b & 127) * mul;
          mul *= 128;
        } while (b & 128);
        const z = u % 2 === 1 ? -(u + 1) / 2 : u / 2;
        if (order === 0) prev = z;
        else if (order === 1) prev += z;
        else {
          delta += z;
          prev += delta;
        }
        v[i] = prev;
      }
      if (pos !== raw.length) throw new Error('column ' + c.name + ' has bytes left over');
      out[c.name] = v;
    });
    return out;
  }

  // ---- the match as data ------------------------------------------------------------------

  function model(meta, col) {
    const T = col.ticks.length;
    const P = meta.players.length;
    const S = col['shot.tick'].length;
    const scale = meta.pos_scale;
    const str = (i) => col.strings[i] || '';
    const nameOf = new Map(meta.players.map((p) => [p.id, p.name]));
    const slotOf = new Map(meta.players.map((p, i) => [p.id, i]));
    // Where each shot's poses, hitboxes and left-out players start.
    const poseStart = new Uint32Array(S + 1);
    const leftStart = new Uint32Array(S + 1);
    for (let s = 0; s < S; s++) {
      poseStart[s + 1] = poseStart[s] + col['shot.poses'][s];
      leftStart[s + 1] = leftStart[s] + col['shot.left'][s];
    }
    const near = col['pose.near'];
    const boxStart = new Uint32Array(near.length + 1);
    for (let i = 0; i < near.length; i++) boxStart[i + 1] = boxStart[i] + near[i];

    function frameOf(tick) {
      // The last frame at or before `tick`.
      let lo = 0;
      let hi = T - 1;
      if (tick <= col.ticks[0]) return 0;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (col.ticks[mid] <= tick) lo = mid;
        else hi = mid - 1;
      }
      return lo;
    }

    function player(p, f) {
      const i = p * T + f;
      const flags = col['track.flags'][i];
      if (!(flags & 1)) return null;
      return {
        id: meta.players[p].id,
        name: meta.players[p].name,
        slot: p,
        x: col['track.x'][i] / scale,
        y: col['track.y'][i] / scale,
        z: col['track.z'][i] / scale,
        yaw: ((col['track.yaw'][i] % 65536) + 65536) % 65536,
        pitch: col['track.pitch'][i],
        health: col['track.health'][i],
        crouching: (flags & 2) !== 0,
        dead: (flags & 4) !== 0,
      };
    }

    // Where player `id` was at `tick` (metres), from the track; the page's data refers to it.
    function trackAt(id, tick) {
      const p = slotOf.get(id);
      const f = frameOf(tick);
      const i = p * T + f;
      if (p === undefined || col.ticks[f] !== tick || !(col['track.flags'][i] & 1)) throw new Error('the data refers to player ' + id + ' at tick ' + tick + ', which the track lacks');
      return [col['track.x'][i] / scale, col['track.y'][i] / scale, col['track.z'][i] / scale];
    }
    // REF_NONE, REF_INTERPOLATED, REF_SHOT_TICK in viewer.rs.
    function base(kind, id, interpolatedFrom, shotTick) {
      if (kind === 1) return trackAt(id, interpolatedFrom);
      if (kind === 2) return trackAt(id, shotTick);
      return [0, 0, 0];
    }

    function viewTime(tick, frac) {
      // As the review prints a view time: `#tick+fraction`.
      return '#' + tick + '+' + (frac / 65536).toFixed(3);
    }

    const PART = ['', 'head', 'torso', 'legs'];

    function shot(s) {
      const g = (name) => col['shot.' + name][s];
      const o = {
        row: s,
        // Its index in the file: the N of `review FILE shot N`.
        index: g('index'),
        tick: g('tick'),
        shooter: g('shooter'),
        shooterName: nameOf.get(g('shooter')) || '',
        seq: g('seq'),
        outcome: g('outcome'),
        part: PART[g('part')] || '',
        kill: g('kill') === 1,
        target: g('target') || null,
        verdict: str(g('verdict')),
        explained: g('explained') === 1,
        why: str(g('why')),
      };
      o.targetName = o.target ? nameOf.get(o.target) || '' : '';
      if (!o.explained) return o;
      const dist = g('distance_mm');
      o.distance = dist < 0 ? null : dist / 1000;
      o.claimed = viewTime(g('claimed_tick'), g('claimed_frac'));
      o.estimate = viewTime(g('estimate_tick'), g('estimate_frac'));
      o.due = viewTime(g('due_tick'), g('due_frac'));
      o.used = g('used_judged') === 1 ? viewTime(g('claimed_tick') + g('used_tick'), g('claimed_frac') + g('used_frac')) : null;
      o.arrived = g('arrived');
      o.rttMs = g('rtt_us') / 1000;
      o.bandMs = g('band_us') / 1000;
      o.offsetMs = g('offset_us') / 1000;
      o.jumped = g('jumped') === 1;
      o.clamp = str(g('clamp'));
      o.rejected = str(g('rejected'));
      const eye = base(g('origin_ref'), o.shooter, 0, o.tick);
      o.origin = [eye[0] + g('origin_x') / 1000, eye[1] + g('origin_y') / 1000, eye[2] + g('origin_z') / 1000];
      o.dir = [g('dir_x') / 1e6, g('dir_y') / 1e6, g('dir_z') / 1e6];
      o.reproduced = g('reproduced') === 1;
      o.interpolated = g('interp_a') < 0 ? null : [g('interp_a'), g('interp_b')];
      o.poses = [];
      for (let i = poseStart[s]; i < poseStart[s + 1]; i++) {
        const id = col['pose.id'][i];
        const from = base(col['pose.ref'][i], id, o.interpolated ? o.interpolated[0] : 0, o.tick);
        const pos = [from[0] + col['pose.x'][i] / 1000, from[1] + col['pose.y'][i] / 1000, from[2] + col['pose.z'][i] / 1000];
        const real = base(col['pose.actual_ref'][i], id, 0, o.tick);
        const pose = {
          id,
          name: nameOf.get(id) || '',
          pos,
          actual: [real[0] + col['pose.actual_x'][i] / 1000, real[1] + col['pose.actual_y'][i] / 1000, real[2] + col['pose.actual_z'][i] / 1000],
          crouching: col['pose.crouching'][i] === 1,
          near: near[i] === 1,
        };
        if (pose.near) {
          const k = boxStart[i];
          const h = (name) => col['hitbox.' + name][k];
          // Tenths of a millimetre from the feet.
          const at = (x, y, z) => [pos[0] + h(x) / 1e4, pos[1] + h(y) / 1e4, pos[2] + h(z) / 1e4];
          pose.head = [at('head_x', 'head_y', 'head_z'), h('head_r') / 1e4];
          pose.torso = [at('torso_ax', 'torso_ay', 'torso_az'), at('torso_bx', 'torso_by', 'torso_bz'), h('torso_r') / 1e4];
          pose.legs = [at('legs_ax', 'legs_ay', 'legs_az'), at('legs_bx', 'legs_by', 'legs_bz'), h('legs_r') / 1e4];
        }
        o.poses.push(pose);
      }
      o.left = [];
      for (let i = leftStart[s]; i < leftStart[s + 1]; i++) {
        o.left.push({ id: col['left.id'][i], name: nameOf.get(col['left.id'][i]) || '', why: str(col['left.why'][i]) });
      }
      return o;
    }

    return { T, P, S, col, meta, frameOf, player, shot, nameOf, slotOf };
  }

  // ---- drawing ----------------------------------------------------------------------------

  const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f', '#393b79', '#637939', '#8c6d31', '#843c39', '#7b4173', '#3182bd', '#e6550d'];
  const colorOf = (slot) => COLORS[slot % COLORS.length];

  function setup(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.width;
    const h = canvas.height;
    if (!canvas.dataset.w) {
      canvas.dataset.w = w;
      canvas.dataset.h = h;
      canvas.width = w * ratio;
      canvas.height = h * ratio;
    }
    const cw = Number(canvas.dataset.w);
    const ch = Number(canvas.dataset.h);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, cw, ch);
    ctx.font = '12px system-ui, sans-serif';
    return { ctx, w: cw, h: ch };
  }

  // A view of the x-z plane fitting `min`..`max` (metres) into the canvas.
  function frame(w, h, min, max, pad) {
    const sx = (w - 2 * pad) / Math.max(max[0] - min[0], 0.5);
    const sz = (h - 2 * pad) / Math.max(max[1] - min[1], 0.5);
    const s = Math.min(sx, sz);
    const ox = pad + ((w - 2 * pad) - (max[0] - min[0]) * s) / 2;
    const oz = pad + ((h - 2 * pad) - (max[1] - min[1]) * s) / 2;
    return { s, x: (x) => ox + (x - min[0]) * s, z: (z) => oz + (z - min[1]) * s };
  }

  function walls(ctx, f, meta) {
    const [lo, hi] = meta.map.bounds;
    ctx.strokeStyle = '#999';
    ctx.strokeRect(f.x(lo[0]), f.z(lo[2]), (hi[0] - lo[0]) * f.s, (hi[2] - lo[2]) * f.s);
    ctx.fillStyle = '#c8c8c8';
    ctx.strokeStyle = '#888';
    for (const [a, b] of meta.map.walls) {
      ctx.fillRect(f.x(a[0]), f.z(a[2]), (b[0] - a[0]) * f.s, (b[2] - a[2]) * f.s);
      ctx.strokeRect(f.x(a[0]), f.z(a[2]), (b[0] - a[0]) * f.s, (b[2] - a[2]) * f.s);
    }
  }

  // A shot's ray in a top view, from `from` to `to` (metres).
  function drawRay(ctx, f, from, to) {
    ctx.strokeStyle = '#000';
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(f.x(from[0]), f.z(from[2]));
    ctx.lineTo(f.x(to[0]), f.z(to[2]));
    ctx.stroke();
    ctx.lineWidth = 1;
  }

  const TURN = (2 * Math.PI) / 65536;

  function drawPlayer(ctx, f, p, color, maxHealth) {
    const cx = f.x(p.x);
    const cz = f.z(p.z);
    const r = Math.max(4, 0.4 * f.s);
    ctx.lineWidth = 2;
    if (p.dead) {
      ctx.strokeStyle = '#888';
      ctx.beginPath();
      ctx.moveTo(cx - r, cz - r);
      ctx.lineTo(cx + r, cz + r);
      ctx.moveTo(cx + r, cz - r);
      ctx.lineTo(cx - r, cz + r);
      ctx.stroke();
    } else {
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.beginPath();
      ctx.arc(cx, cz, r, 0, 2 * Math.PI);
      if (p.crouching) ctx.stroke();
      else ctx.fill();
      // Yaw 0 faces +x, a quarter turn +z (docs/movement.md).
      ctx.beginPath();
      ctx.moveTo(cx, cz);
      ctx.lineTo(cx + Math.cos(p.yaw * TURN) * r * 2.5, cz + Math.sin(p.yaw * TURN) * r * 2.5);
      ctx.stroke();
      ctx.fillStyle = '#ddd';
      ctx.fillRect(cx - r, cz + r + 3, 2 * r, 3);
      ctx.fillStyle = p.health * 3 < maxHealth ? '#d22' : '#2a2';
      ctx.fillRect(cx - r, cz + r + 3, (2 * r * Math.min(p.health, maxHealth)) / maxHealth, 3);
    }
    ctx.lineWidth = 1;
    ctx.fillStyle = '#222';
    ctx.fillText(p.name, cx + r + 3, cz - r);
  }

  // ---- the page ---------------------------------------------------------------------------

  function fmtClock(seconds) {
    const m = Math.floor(seconds / 60);
    const s = seconds - m * 60;
    return String(m).padStart(2, '0') + ':' + s.toFixed(2).padStart(5, '0');
  }

  const m3 = (v) => v.map((x) => x.toFixed(3)).join(', ');
  const exact = (v) => v.join(',');

  function start(meta, col) {
    const M = model(meta, col);
    const hz = meta.tick_rate_hz;
    const sum = meta.summary;
    const firstTick = col.ticks[0];
    const lastTick = col.ticks[M.T - 1];
    // Times are from the start of the match, whatever part of it the page shows.
    const origin = Math.min(sum.first_tick, firstTick);
    const seconds = (tick) => (tick - origin) / hz;
    const part = firstTick > sum.first_tick || lastTick < sum.last_tick
      ? ' This page shows ticks ' + firstTick + ' to ' + lastTick + ' (' + fmtClock(seconds(lastTick)) + ') and their ' + M.S + ' shots.'
      : '';
    $('facts').textContent =
      'Map ' + sum.map + ', ' + hz + ' ticks per second, ticks ' + sum.first_tick + ' to ' + sum.last_tick + ' (' + fmtClock(sum.duration_s) +
      '), ' + M.P + ' players, ' + sum.shots + ' shots, ' + sum.hits + ' hits, ' + sum.headshots + ' headshots, ' + sum.kills +
      ' kills. Lag compensation ' + (meta.lag_compensation ? 'on' : 'off') + '. ' +
      (sum.finished_cleanly ? 'The match finished cleanly.' : 'The match did not finish cleanly (the file has no footer, or is damaged).') +
      ' Recorded by ' + sum.build + '.' + part;
    const problems = [];
    if (meta.replay_problem) problems.push(meta.replay_problem);
    if (sum.damage) problems.push('The file is damaged: ' + sum.damage);
    if (problems.length) {
      $('problem').textContent = problems.join(' ');
      $('problem').hidden = false;
    }

    // Map frame for the top view: the map's bounds and everywhere anyone went.
    const lo = [meta.map.bounds[0][0], meta.map.bounds[0][2]];
    const hi = [meta.map.bounds[1][0], meta.map.bounds[1][2]];
    const topFrame = frame(640, 640, lo, hi, 16);

    let f = 0;
    let chosen = null;
    let playing = false;
    let speed = 1;
    const scrub = $('scrub');
    scrub.max = M.T - 1;

    const tbody = $('players').tBodies[0];

    function drawTop() {
      const { ctx } = setup($('top'));
      walls(ctx, topFrame, meta);
      const tick = col.ticks[f];
      if (chosen && chosen.explained && chosen.tick === tick) drawRay(ctx, topFrame, chosen.origin, rayEnd(chosen));
      for (let p = 0; p < M.P; p++) {
        const s = M.player(p, f);
        if (s) drawPlayer(ctx, topFrame, s, colorOf(p), meta.health);
      }
    }

    function fillPlayers() {
      tbody.textContent = '';
      for (let p = 0; p < M.P; p++) {
        const s = M.player(p, f);
        if (!s) continue;
        const tr = el('tr');
        tr.dataset.id = s.id;
        tr.dataset.pos = exact([s.x, s.y, s.z]);
        tr.dataset.health = s.health;
        tr.dataset.yaw = s.yaw;
        tr.dataset.dead = s.dead ? '1' : '0';
        tr.dataset.crouching = s.crouching ? '1' : '0';
        tr.append(el('td', String(s.id)));
        const name = el('td', s.name, 'name');
        name.style.color = colorOf(p);
        tr.append(name);
        tr.append(el('td', m3([s.x, s.y, s.z]), 'num'));
        tr.append(el('td', ((s.yaw * 360) / 65536).toFixed(1) + '°', 'num'));
        tr.append(el('td', s.crouching ? 'crouching' : 'standing'));
        tr.append(el('td', s.dead ? 'dead' : String(s.health), 'num'));
        tbody.append(tr);
      }
    }

    function show(newFrame, follow) {
      f = Math.max(0, Math.min(M.T - 1, newFrame));
      const tick = col.ticks[f];
      scrub.value = f;
      if (document.activeElement !== $('tick')) $('tick').value = tick;
      $('clock').textContent = fmtClock(seconds(tick)) + ' of ' + fmtClock(seconds(lastTick));
      document.body.dataset.tick = tick;
      drawTop();
      fillPlayers();
      if (follow) list.follow(tick);
      list.render();
    }

    // ---- timeline
    $('first').onclick = () => show(0, true);
    $('last').onclick = () => show(M.T - 1, true);
    $('back').onclick = () => { pause(); show(f - 1, true); };
    $('fwd').onclick = () => { pause(); show(f + 1, true); };
    scrub.oninput = () => show(Number(scrub.value), true);
    $('speed').onchange = () => { speed = Number($('speed').value); };
    $('tick').onchange = () => {
      const t = Math.round(Number($('tick').value));
      if (Number.isFinite(t)) show(M.frameOf(t), true);
    };
    let last = 0;
    let carry = 0;
    function step(now) {
      if (!playing) return;
      carry += ((now - last) / 1000) * hz * speed;
      last = now;
      const n = Math.floor(carry);
      carry -= n;
      if (n > 0) show(f + n, true);
      if (f >= M.T - 1) pause();
      else requestAnimationFrame(step);
    }
    function pause() {
      playing = false;
      $('play').textContent = '▶ play';
    }
    $('play').onclick = () => {
      if (playing) return pause();
      if (f >= M.T - 1) show(0, true);
      playing = true;
      $('play').textContent = '❚❚ pause';
      last = performance.now();
      carry = 0;
      requestAnimationFrame(step);
    };
    document.addEventListener('keydown', (e) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.key === 'ArrowLeft') { pause(); show(f - 1, true); }
      else if (e.key === 'ArrowRight') { pause(); show(f + 1, true); }
      else if (e.key === 'Home') show(0, true);
      else if (e.key === 'End') show(M.T - 1, true);
      else if (e.key === ' ') $('play').click();
      else return;
      e.preventDefault();
    });

    // ---- kill feed
    const kills = $('kills');
    const killed = col['shot.kill'];
    for (let s = 0; s < M.S; s++) {
      if (!killed[s]) continue;
      const o = M.shot(s);
      const b = el('button', fmtClock(seconds(o.tick)) + '  ' + o.shooterName + ' killed ' + o.targetName + (o.part === 'head' ? ' (headshot)' : ''));
      b.dataset.shot = o.index;
      b.onclick = () => choose(s);
      const li = el('li');
      li.append(b);
      kills.append(li);
    }
    if (!kills.children.length) kills.append(el('li', 'no kills'));

    // ---- shot list (only the rows in view are in the page)
    const shooterSel = $('byshooter');
    for (const p of meta.players) {
      const o = el('option', p.name + ' (' + p.id + ')');
      o.value = p.id;
      shooterSel.append(o);
    }
    const ROW = 22;
    const list = {
      rows: [],
      filter() {
        const who = shooterSel.value === '' ? null : Number(shooterSel.value);
        const what = $('byverdict').value;
        this.rows = [];
        for (let s = 0; s < M.S; s++) {
          if (who !== null && col['shot.shooter'][s] !== who) continue;
          if (what === 'head' && !(col['shot.outcome'][s] === 1 && col['shot.part'][s] === 1)) continue;
          if (what === 'kill' && !col['shot.kill'][s]) continue;
          if (what !== '' && what !== 'head' && what !== 'kill' && col['shot.outcome'][s] !== Number(what)) continue;
          this.rows.push(s);
        }
        $('shotcount').textContent = '(' + this.rows.length + (this.rows.length === M.S ? '' : ' of ' + M.S) + ')';
        $('shotspacer').style.height = this.rows.length * ROW + 'px';
        this.render();
      },
      follow(tick) {
        let lo = 0;
        let hi = this.rows.length;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (col['shot.tick'][this.rows[mid]] < tick) lo = mid + 1;
          else hi = mid;
        }
        const box = $('shotlist');
        const y = lo * ROW;
        if (y < box.scrollTop || y > box.scrollTop + box.clientHeight - ROW) box.scrollTop = Math.max(0, y - box.clientHeight / 3);
      },
      render() {
        const box = $('shotlist');
        const first = Math.max(0, Math.floor(box.scrollTop / ROW) - 5);
        const count = Math.ceil(box.clientHeight / ROW) + 10;
        const holder = $('shotrows');
        holder.style.top = first * ROW + 'px';
        holder.textContent = '';
        const tick = col.ticks[f];
        if (!this.rows.length) holder.append(el('p', M.S ? 'No shot matches.' : 'Nobody fired.', 'legend'));
        for (let r = first; r < Math.min(this.rows.length, first + count); r++) {
          const s = this.rows[r];
          const o = M.shot(s);
          const b = el('button', '#' + o.index + '  tick ' + o.tick + '  ' + o.shooterName + ': ' + o.verdict + (o.target ? ' on ' + o.targetName : ''));
          b.dataset.shot = o.index;
          b.className = verdictClass(o) + (o.tick === tick ? ' now' : '') + (chosen && chosen.row === s ? ' chosen' : '');
          b.onclick = () => choose(s);
          holder.append(b);
        }
      },
    };
    $('shotlist').onscroll = () => list.render();
    shooterSel.onchange = () => list.filter();
    $('byverdict').onchange = () => list.filter();
    $('shotno').onchange = () => {
      const n = Math.round(Number($('shotno').value));
      const index = col['shot.index'];
      let lo = 0;
      let hi = M.S;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (index[mid] < n) lo = mid + 1;
        else hi = mid;
      }
      if (lo < M.S && index[lo] === n) choose(lo);
    };

    function verdictClass(o) {
      if (o.outcome === 1) return o.part === 'head' ? 'v-head' : 'v-hit';
      return o.outcome === 2 ? 'v-rejected' : 'v-miss';
    }

    // ---- one shot
    function rayLength(o) {
      return Math.max(o.distance === null ? 30 : o.distance, 5) + 3;
    }
    function rayEnd(o) {
      const d = o.distance === null ? rayLength(o) : o.distance;
      return [o.origin[0] + o.dir[0] * d, o.origin[1] + o.dir[1] * d, o.origin[2] + o.dir[2] * d];
    }

    function choose(s) {
      pause();
      chosen = M.shot(s);
      const o = chosen;
      $('shot').hidden = false;
      $('shot').dataset.shot = o.index;
      $('shotno').value = o.index;
      $('shottitle').textContent = 'Shot #' + o.index + ' at tick ' + o.tick + ' (' + fmtClock(seconds(o.tick)) + ') by ' + o.shooterName + ' (player ' + o.shooter + ', input ' + o.seq + ')';
      const v = $('verdict');
      v.textContent = 'Verdict: ' + o.verdict + (o.target ? ' on ' + o.targetName + ' (player ' + o.target + ')' : '') +
        (o.explained && o.distance !== null ? ', ' + o.distance.toFixed(2) + ' m away' : '') + (o.kill ? ', a kill' : '');
      v.className = verdictClass(o);
      v.dataset.verdict = o.verdict;
      v.dataset.target = o.target || '';
      reasons(o);
      fillRewound(o);
      pictures(o);
      show(M.frameOf(o.tick), true);
      $('shot').scrollIntoView({ block: 'nearest' });
    }

    function reasons(o) {
      const ul = $('reasons');
      ul.textContent = '';
      const say = (text) => ul.append(el('li', text));
      if (!o.explained) {
        say('This shot is not explained: ' + o.why + '. The verdict above is the one the file recorded.');
        return;
      }
      say("The shooter's game said its screen showed the world at " + o.claimed + ' (tick and fraction: the view time the client claimed with its input).');
      say("The server's own estimate of that moment was " + o.estimate + ': when the input was due to arrive (' + o.due + '), less the round trip (' + o.rttMs.toFixed(1) +
        ' ms) and the interpolation delay. The claim is ' + (o.offsetMs >= 0 ? '+' : '') + o.offsetMs.toFixed(1) + ' ms from the estimate. The input reached the server at tick ' + o.arrived + '.');
      if (o.jumped) say("The claim jumped back from the shooter's previous claims, so no tolerance applied to it.");
      else say('On this connection a claim may lie up to ' + o.bandMs.toFixed(1) + ' ms before the estimate (a band that grows with how unevenly its inputs arrive).');
      if (o.used === null) {
        say('The shot was not judged: ' + o.rejected + '.');
      } else if (o.clamp) {
        say('The targets were rewound to ' + o.used + ', not to the claim: ' + o.clamp + '.');
      } else {
        say('The targets were rewound to ' + o.used + ', exactly the moment the shooter claimed to see.');
      }
      if (o.interpolated) say('Their positions at that moment lie between ticks ' + o.interpolated[0] + ' and ' + o.interpolated[1] + ', as on the shooter\'s screen.');
      if (!meta.lag_compensation) say('Lag compensation was off in this match: every shot was judged against the newest state.');
      if (o.outcome === 1) say('The ray from the shooter\'s eyes hit ' + o.targetName + "'s " + o.part + (o.distance !== null ? ' at ' + o.distance.toFixed(2) + ' m' : '') + (o.kill ? ', and the hit killed.' : '.'));
      else if (o.outcome === 0 && o.used !== null) say("The ray passed by everyone's hitboxes as they were at that moment (or a wall stopped it first).");
      say(o.reproduced ? 'Replaying the recording judges this shot the same way: the verdict is the one the server gave during the match.' :
        'WARNING: replaying the recording judges this shot differently from the verdict the server recorded.');
    }

    function fillRewound(o) {
      const body = $('rewound').tBodies[0];
      body.textContent = '';
      $('realtick').textContent = o.tick;
      for (const p of o.poses || []) {
        const tr = el('tr');
        tr.dataset.id = p.id;
        tr.dataset.pos = exact(p.pos);
        tr.dataset.actual = exact(p.actual);
        tr.append(el('td', String(p.id)));
        const name = el('td', p.name + (p.id === o.target ? ' (hit)' : '') + (p.crouching ? ', crouching' : ''));
        name.style.color = colorOf(M.slotOf.get(p.id) || 0);
        tr.append(name);
        tr.append(el('td', m3(p.pos), 'num'));
        tr.append(el('td', m3(p.actual), 'num'));
        if (p.near) {
          tr.dataset.head = exact([...p.head[0], p.head[1]]);
          tr.dataset.torso = exact([...p.torso[0], ...p.torso[1], p.torso[2]]);
          tr.dataset.legs = exact([...p.legs[0], ...p.legs[1], p.legs[2]]);
          tr.append(el('td', m3(p.head[0]) + '; r ' + p.head[1].toFixed(3), 'num'));
          tr.append(el('td', m3(p.torso[0]) + ' to ' + m3(p.torso[1]) + '; r ' + p.torso[2].toFixed(3), 'num'));
          tr.append(el('td', m3(p.legs[0]) + ' to ' + m3(p.legs[1]) + '; r ' + p.legs[2].toFixed(3), 'num'));
        } else {
          const td = el('td', 'more than 3 m from the ray: its hitboxes are not drawn');
          td.colSpan = 3;
          tr.append(td);
        }
        body.append(tr);
      }
      const ul = $('leftout');
      ul.textContent = '';
      for (const l of o.left || []) ul.append(el('li', l.name + ' (player ' + l.id + ') could not be hit: ' + l.why + '.'));
    }

    function pictures(o) {
      const saw = setup($('saw'));
      const real = setup($('real'));
      const side = setup($('side'));
      if (!o.explained) {
        for (const c of [saw, real, side]) c.ctx.fillText('No picture: ' + o.why + '.', 10, 20);
        $('sawcap').textContent = '';
        $('realcap').textContent = '';
        $('sidecap').textContent = '';
        return;
      }
      const end = rayEnd(o);
      // Frame both top views alike, around the players near the ray (rewound and real) and
      // the hit: what a dispute is about. With nobody near the ray, the whole ray.
      const close = o.poses.filter((p) => p.near);
      const points = close.flatMap((p) => [p.pos, p.actual]);
      if (o.distance !== null) points.push(end);
      if (!close.length) points.push(o.origin, end);
      let min = [Infinity, Infinity];
      let max = [-Infinity, -Infinity];
      for (const q of points) {
        min = [Math.min(min[0], q[0]), Math.min(min[1], q[2])];
        max = [Math.max(max[0], q[0]), Math.max(max[1], q[2])];
      }
      const margin = close.length ? 1.5 : 3;
      min = [min[0] - margin, min[1] - margin];
      max = [max[0] + margin, max[1] + margin];
      const fr = frame(460, 460, min, max, 8);
      for (const [c, rewound] of [[saw, true], [real, false]]) {
        const ctx = c.ctx;
        ctx.save();
        ctx.beginPath();
        ctx.rect(0, 0, c.w, c.h);
        ctx.clip();
        walls(ctx, fr, meta);
        for (const p of o.poses) {
          const color = p.id === o.target ? '#d22' : colorOf(M.slotOf.get(p.id) || 0);
          ctx.strokeStyle = color;
          ctx.fillStyle = color;
          if (rewound && p.near) {
            ctx.globalAlpha = 0.3;
            for (const [a, b, r] of [p.legs, p.torso]) {
              ctx.lineWidth = Math.max(1, 2 * r * fr.s);
              ctx.lineCap = 'round';
              ctx.beginPath();
              ctx.moveTo(fr.x(a[0]), fr.z(a[2]));
              ctx.lineTo(fr.x(b[0]) + 0.01, fr.z(b[2]));
              ctx.stroke();
            }
            ctx.globalAlpha = 0.6;
            ctx.beginPath();
            ctx.arc(fr.x(p.head[0][0]), fr.z(p.head[0][2]), Math.max(1, p.head[1] * fr.s), 0, 2 * Math.PI);
            ctx.fill();
            ctx.globalAlpha = 1;
            ctx.lineWidth = 1;
          } else {
            const q = rewound ? p.pos : p.actual;
            ctx.beginPath();
            ctx.arc(fr.x(q[0]), fr.z(q[2]), Math.max(3, 0.3 * fr.s), 0, 2 * Math.PI);
            if (rewound) ctx.fill();
            else ctx.stroke();
          }
          if (!rewound && p.near) {
            // Where the shot was judged against, dotted, to the real place.
            ctx.setLineDash([3, 3]);
            ctx.beginPath();
            ctx.arc(fr.x(p.pos[0]), fr.z(p.pos[2]), Math.max(3, 0.3 * fr.s), 0, 2 * Math.PI);
            ctx.moveTo(fr.x(p.pos[0]), fr.z(p.pos[2]));
            ctx.lineTo(fr.x(p.actual[0]), fr.z(p.actual[2]));
            ctx.stroke();
            ctx.setLineDash([]);
          }
          const q = rewound ? p.pos : p.actual;
          ctx.fillStyle = '#222';
          ctx.fillText(p.name, fr.x(q[0]) + 0.5 * fr.s + 4, fr.z(q[2]) - 4);
        }
        drawRay(ctx, fr, o.origin, end);
        ctx.fillStyle = '#000';
        ctx.beginPath();
        ctx.arc(fr.x(o.origin[0]), fr.z(o.origin[2]), 4, 0, 2 * Math.PI);
        ctx.fill();
        ctx.restore();
      }
      $('sawcap').textContent = o.used === null
        ? 'The shot was not judged, so nobody was rewound: only the ray is drawn.'
        : 'What the shooter saw, as judged: everyone rewound to ' + o.used + '. The ray from the shooter (black dot); the hitboxes (head, torso, legs) of the players within 3 m of it; feet of the others.';
      const zoom = close.length ? ' Zoomed on the players within 3 m of the ray; the ray comes from the shooter at (' + m3([o.origin[0], o.origin[2]]) + ') (x, z).' : '';
      $('sawcap').textContent += zoom;
      $('realcap').textContent = 'Where everyone really was at tick ' + o.tick + ', when the shot was judged (feet; hollow circles), with the same ray; dotted, the rewound feet of the players near the ray and how far they were from the real place.' + zoom;
      // Side view: along the horizontal direction of the ray, height up.
      const flat = Math.hypot(o.dir[0], o.dir[2]) || 1;
      const fx = o.dir[0] / flat;
      const fz = o.dir[2] / flat;
      const along = (p) => (p[0] - o.origin[0]) * fx + (p[2] - o.origin[2]) * fz;
      // Along the ray from a little before the nearest player near it to a little after the
      // farthest (the whole ray when nobody is near), at one scale for length and height.
      const length = rayLength(o);
      let d0 = 0;
      let d1 = length;
      if (close.length) {
        const ds = close.map((p) => along(p.pos));
        d0 = Math.max(0, Math.min(...ds) - 2);
        d1 = Math.min(length, Math.max(...ds) + 2);
        if (d1 - d0 < 4) d1 = d0 + 4;
      }
      const s = Math.min((side.w - 40) / (d1 - d0), (side.h - 40) / 2.5);
      const sx = (d) => 20 + (d - d0) * s;
      const sy = (y) => side.h - 20 - y * s;
      const rayY = (d) => o.origin[1] + (d / flat) * o.dir[1];
      $('sidecap').textContent = 'Side view along the ray, from ' + d0.toFixed(1) + ' m to ' + d1.toFixed(1) +
        ' m from the shooter (distance to the right, height up, one scale for both). Hitboxes as the shot was judged, for the players within 3 m of the ray.';
      side.ctx.save();
      side.ctx.beginPath();
      side.ctx.rect(0, 0, side.w, side.h);
      side.ctx.clip();
      const ctx = side.ctx;
      ctx.strokeStyle = '#888';
      ctx.beginPath();
      ctx.moveTo(sx(0), sy(0));
      ctx.lineTo(sx(d1), sy(0));
      ctx.stroke();
      for (const p of o.poses) {
        if (!p.near) continue;
        const color = p.id === o.target ? '#d22' : colorOf(M.slotOf.get(p.id) || 0);
        ctx.strokeStyle = color;
        ctx.fillStyle = color;
        ctx.globalAlpha = 0.4;
        ctx.lineCap = 'round';
        for (const [a, b, r] of [p.torso, p.legs]) {
          ctx.lineWidth = Math.max(1, 2 * r * s);
          ctx.beginPath();
          ctx.moveTo(sx(along(a)), sy(a[1]));
          ctx.lineTo(sx(along(b)), sy(b[1]) + 0.01);
          ctx.stroke();
        }
        ctx.globalAlpha = 0.6;
        ctx.beginPath();
        ctx.arc(sx(along(p.head[0])), sy(p.head[0][1]), Math.max(1, p.head[1] * s), 0, 2 * Math.PI);
        ctx.fill();
        ctx.globalAlpha = 1;
        ctx.lineWidth = 1;
        ctx.fillStyle = '#222';
        ctx.fillText(p.name + (p.crouching ? ' (crouching)' : ''), sx(along(p.head[0])) + p.head[1] * s + 4, sy(p.head[0][1] + 0.3));
      }
      const stop = Math.min(d1, o.distance === null ? length : along(end));
      ctx.strokeStyle = '#000';
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.moveTo(sx(d0), sy(rayY(d0)));
      ctx.lineTo(sx(stop), sy(rayY(stop)));
      ctx.stroke();
      ctx.lineWidth = 1;
      ctx.restore();
    }

    $('loading').hidden = true;
    $('app').hidden = false;
    list.filter();
    let opening = 0;
    while (opening < M.T - 1 && ![...Array(M.P).keys()].some((p) => M.player(p, opening))) opening++;
    show(opening, false);
    document.body.dataset.ready = '1';
  }

  async function main() {
    try {
      const meta = JSON.parse($('meta').textContent);
      if (meta.version !== 1) throw new Error('its data is version ' + meta.version + ' and this page reads version 1');
      const parts = await inflate(meta.columns, $('blob').textContent);
      start(meta, columns(meta.columns, parts));
    } catch (e) {
      const p = $('loading');
      p.textContent = 'This page cannot show the match: ' + (e && e.message ? e.message : String(e));
      p.className = 'problem';
      document.body.dataset.ready = 'failed';
    }
  }
  main();
})();
