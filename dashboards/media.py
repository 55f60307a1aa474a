"""Two videos side by side that play, pause and seek together (an HTML component; no paths, only bytes)."""

from __future__ import annotations

import base64

_TEMPLATE = """
<div style="display:flex;gap:12px;font-family:sans-serif">
  <figure style="flex:1;margin:0"><figcaption><b>Left</b></figcaption>
    <video id="left" src="data:video/mp4;base64,{left}" style="width:100%" muted playsinline preload="auto"></video></figure>
  <figure style="flex:1;margin:0"><figcaption><b>Right</b></figcaption>
    <video id="right" src="data:video/mp4;base64,{right}" style="width:100%" muted playsinline preload="auto"></video></figure>
</div>
<div style="margin-top:6px;font-family:sans-serif">
  <button id="play">Play both</button> <button id="restart">Restart</button>
  <label><input type="checkbox" id="sound"> sound (left)</label>
</div>
<script>
const l = document.getElementById("left"), r = document.getElementById("right");
const sync = () => {{ if (Math.abs(r.currentTime - l.currentTime) > 0.05) r.currentTime = l.currentTime; }};
document.getElementById("play").onclick = () => {{
  if (l.paused) {{ sync(); l.play(); r.play(); }} else {{ l.pause(); r.pause(); }}
}};
document.getElementById("restart").onclick = () => {{ l.currentTime = 0; r.currentTime = 0; l.play(); r.play(); }};
document.getElementById("sound").onchange = (e) => {{ l.muted = !e.target.checked; }};
l.addEventListener("seeked", sync); l.addEventListener("timeupdate", sync);
l.addEventListener("ended", () => r.pause());
</script>
"""


def side_by_side_html(left: bytes, right: bytes) -> str:
    """HTML of two synchronised players; the videos travel as data URIs so no file path reaches the page."""
    return _TEMPLATE.format(left=base64.b64encode(left).decode(), right=base64.b64encode(right).decode())
