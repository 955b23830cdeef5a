<!doctype html>
<!-- Written for the tests in the shape of bottle-websocket's echo page. -->
<head><meta charset="utf-8"><title>WebSocket Echo Test</title></head>
<body>
  <h2>Bottle Websockets!</h2>
  <form id="send"><input type="text" id="text" value="message"><input type="submit" value="Send"></form>
  <ul id="messages"></ul>
  <script>
    const add = (text) => {
      const li = document.createElement('li'); li.textContent = text;
      document.getElementById('messages').appendChild(li);
    };
    const ws = new WebSocket('ws://' + location.host + '/websocket');
    ws.onopen = () => add('WebSocket connection opened.');
    ws.onmessage = (evt) => add(evt.data);
    ws.onclose = () => add('WebSocket connection closed.');
    document.getElementById('send').onsubmit = (ev) => {
      ev.preventDefault();
      ws.send(document.getElementById('text').value);
      document.getElementById('text').value = '';
    };
  </script>
</body>
