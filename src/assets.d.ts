/** Files imported `with { type: "file" }` resolve to a path (embedded in the compiled binary). */
declare module "*.so" {
  const path: string;
  export default path;
}
