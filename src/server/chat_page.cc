// The chat page served at `/`: one self-contained HTML file, no external resources. It keeps the
// conversation in the page, posts it to /v1/chat/completions with stream: true and appends each
// SSE delta to the reply as it arrives. `/?q=TEXT` types TEXT and sends it on load (used by the
// headless-browser test); when a reply is complete the body gets data-state="done", and the
// reply's data-chunks says in how many streamed pieces it arrived.
#include "server/server.h"

namespace ff::server {

const std::string& chat_page_html() {
  static const std::string html = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fireflyer chat</title>
<style>
  body { font: 15px/1.5 system-ui, sans-serif; margin: 0; background: #f6f6f4; color: #222; }
  header { padding: 10px 16px; background: #1f2937; color: #f9fafb; font-weight: 600; }
  header span { font-weight: 400; opacity: .7; margin-left: 8px; }
  #log { max-width: 820px; margin: 0 auto; padding: 16px; min-height: calc(100vh - 170px); }
  .msg { white-space: pre-wrap; padding: 10px 14px; border-radius: 10px; margin: 8px 0; }
  .user { background: #dbeafe; margin-left: 20%; }
  .assistant { background: #fff; border: 1px solid #e5e7eb; margin-right: 20%; }
  .error { background: #fee2e2; }
  form { position: sticky; bottom: 0; max-width: 820px; margin: 0 auto; padding: 12px 16px;
         display: flex; gap: 8px; background: #f6f6f4; }
  textarea { flex: 1; font: inherit; padding: 8px; border-radius: 8px; border: 1px solid #ccc;
             resize: vertical; min-height: 44px; }
  button { font: inherit; padding: 0 18px; border-radius: 8px; border: 0; background: #2563eb;
           color: #fff; cursor: pointer; }
  button:disabled { background: #9ca3af; }
  .settings { max-width: 820px; margin: 0 auto; padding: 0 16px 12px; font-size: 13px; color: #555; }
  .settings input { width: 60px; }
</style>
</head>
<body data-state="idle">
<header>fireflyer<span id="model"></span></header>
<div id="log"></div>
<form id="form">
  <textarea id="input" placeholder="Type a message (Enter to send, Shift+Enter for a new line)"></textarea>
  <button id="send" type="submit">Send</button>
</form>
<div class="settings">
  temperature <input id="temperature" type="number" value="0" min="0" max="2" step="0.1">
  max tokens <input id="max_tokens" type="number" value="128" min="1">
  <button id="clear" type="button" style="padding: 2px 10px">New chat</button>
</div>
<script>
const log = document.getElementById('log');
const input = document.getElementById('input');
const send = document.getElementById('send');
let messages = [];

fetch('/v1/models').then(r => r.json()).then(j => {
  document.getElementById('model').textContent = j.data[0].id;
}).catch(() => {});

function bubble(role, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + role;
  div.textContent = text;
  log.appendChild(div);
  div.scrollIntoView({block: 'end'});
  return div;
}

async function submit() {
  const text = input.value.trim();
  if (!text || send.disabled) return;
  input.value = '';
  send.disabled = true;
  document.body.dataset.state = 'streaming';
  messages.push({role: 'user', content: text});
  bubble('user', text);
  const reply = bubble('assistant', '');
  reply.id = 'reply-' + messages.length;
  let content = '';
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({
        messages, stream: true,
        temperature: Number(document.getElementById('temperature').value),
        max_tokens: Number(document.getElementById('max_tokens').value)})
    });
    if (!res.ok) {
      const err = await res.json();
      throw new Error(err.error ? err.error.message : res.statusText);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith('data: ')) continue;
        const data = event.slice(6);
        if (data === '[DONE]') continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        const delta = j.choices && j.choices[0] && j.choices[0].delta;
        if (delta && delta.content) {
          content += delta.content;
          reply.dataset.chunks = Number(reply.dataset.chunks || 0) + 1;
          reply.textContent = content;
          reply.scrollIntoView({block: 'end'});
        }
      }
    }
    messages.push({role: 'assistant', content});
  } catch (e) {
    reply.className = 'msg assistant error';
    reply.textContent = content + '\n[error: ' + e.message + ']';
    messages.pop();
  }
  send.disabled = false;
  document.body.dataset.state = 'done';
  input.focus();
}

document.getElementById('form').addEventListener('submit', e => { e.preventDefault(); submit(); });
input.addEventListener('keydown', e => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); submit(); }
});
document.getElementById('clear').addEventListener('click', () => {
  messages = [];
  log.textContent = '';
});
const q = new URLSearchParams(location.search).get('q');
if (q) { input.value = q; submit(); }
</script>
</body>
</html>
)HTML";
  return html;
}

}  // namespace ff::server
