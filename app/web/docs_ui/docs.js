// Starts Swagger UI on the page /docs (app/web/docs.py). Ours, not Swagger UI's: the page has no
// inline script, so its Content-Security-Policy can allow scripts of this origin only.
"use strict";

(function () {
  const root = document.getElementById("swagger-ui");
  // Relative to the page, so that the docs work under a path prefix too.
  const url = new URL(root.dataset.openapi, document.baseURI).href;
  window.ui = SwaggerUIBundle({
    url: url,
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    filter: true,
    displayRequestDuration: true,
    showExtensions: true,
    defaultModelsExpandDepth: 0,
    // Never send the document to swagger.io's validator: nothing leaves this origin.
    validatorUrl: null,
    onComplete: function () {
      const title = window.ui.specSelectors.info().get("title");
      if (title) document.title = title;
    },
  });
})();
