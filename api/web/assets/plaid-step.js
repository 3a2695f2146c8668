// kluis hosted page, Plaid step: opens Plaid Link with the session's link
// token and posts the public token Plaid returns to kluis in the page's
// form (never in a URL). Loaded only on this step, with Plaid's script.
(function () {
  'use strict';
  var form = document.getElementById('plaid-form');
  var button = document.getElementById('plaid-open');
  if (!form || !button || !window.Plaid) { return; }
  var handler = window.Plaid.create({
    token: form.getAttribute('data-link-token'),
    onSuccess: function (publicToken) {
      document.getElementById('plaid-public-token').value = publicToken;
      form.submit();
    },
    onExit: function () {
      var b = document.querySelector('form.exit button');
      if (b) { b.click(); }
    }
  });
  button.addEventListener('click', function () { handler.open(); });
})();
