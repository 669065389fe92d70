// Renders the OpenAPI description as a plain list of endpoints (no external assets, unlike Swagger UI's CDN).
"use strict";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text != null) node.textContent = text;
  return node;
}

function typeOf(schema, spec) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.anyOf) return schema.anyOf.map((s) => typeOf(s, spec)).join(" | ");
  if (schema.type === "array") return `${typeOf(schema.items, spec)}[]`;
  return schema.type || "";
}

function table(rows, head) {
  const t = el("table", "params");
  const tr = el("tr");
  head.forEach((h) => tr.append(el("th", null, h)));
  t.append(tr);
  rows.forEach((r) => { const row = el("tr"); r.forEach((c) => row.append(el("td", null, c))); t.append(row); });
  return t;
}

function schemaRows(name, spec) {
  const schema = spec.components && spec.components.schemas && spec.components.schemas[name];
  if (!schema || !schema.properties) return [];
  return Object.entries(schema.properties).map(([key, prop]) => [
    key, typeOf(prop, spec), (schema.required || []).includes(key) ? "yes" : "", prop.description || "",
  ]);
}

fetch("/openapi.json").then((r) => r.json()).then((spec) => {
  const root = document.getElementById("endpoints");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const box = el("section", "panel endpoint");
      const head = el("h2");
      head.append(el("span", `method ${method}`, method.toUpperCase()), el("code", null, ` ${path}`));
      box.append(head, el("p", "muted", op.summary || ""));
      const params = (op.parameters || []).map((p) => [p.name, `${p.in} ${typeOf(p.schema, spec)}`, p.required ? "yes" : "", (p.schema && p.schema.description) || p.description || ""]);
      if (params.length) box.append(table(params, ["parameter", "in / type", "required", "meaning"]));
      const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
      if (body) {
        const name = typeOf(body.schema, spec);
        box.append(el("p", "small", `JSON body: ${name}`), table(schemaRows(name, spec), ["field", "type", "required", "meaning"]));
      }
      root.append(box);
    }
  }
}).catch((e) => { document.getElementById("endpoints").textContent = `Cannot load /openapi.json: ${e}`; });
