<!doctype html>
<!-- Written for the tests in the shape of bottle-websocket's chat page. -->
<head><meta charset="utf-8"><title>WebSocket Chat</title></head>
<body>
  <h2>WebSocket Chat Example</h2>
  <form id="send-message">
    <input id="name" type="text" value="name"><input id="message" type="text" value="message">
    <input type="submit" value="Send">
  </form>
  <ul id="messages"></ul>
  <script>
    const add = (text) => {
      const li = document.createElement('li'); li.textContent = text;
      document.getElementById('messages').appendChild(li);
    };
    const ws = new WebSocket('ws://' + location.host + '/websocket');
    ws.onopen = () => add('Connected to chat.');
    ws.onmessage = (evt) => add(evt.data);
    document.getElementById('send-message').onsubmit = (ev) => {
      ev.preventDefault();
      ws.send(document.getElementById('name').value + ': ' + document.getElementById('message').value);
      document.getElementById('message').value = '';
    };
  </script>
</body>
