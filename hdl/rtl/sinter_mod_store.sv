// The store module: runs Store instructions (output buffer -> DRAM) and Sync instructions that
// target it, in order. Its only neighbour is the compute module ("prev").
//
// Elements are read from the output buffer one per cycle into a small queue, which absorbs write
// backpressure: a read is only issued when the queue has room for it. An element narrower than a
// beat is written with byte strobes at its offset in the beat; a wider one as whole beats.
module sinter_mod_store #(
  parameter int unsigned COLS      = sinter_isa_pkg::DEFAULT_COLS,
  parameter int unsigned OUT_DEPTH = sinter_isa_pkg::DEFAULT_OUT_DEPTH,
  parameter int unsigned BUS_BYTES = sinter_isa_pkg::DEFAULT_BUS_BYTES,
  parameter int unsigned OUT_AW    = $clog2(OUT_DEPTH)
) (
  input  logic                   clk_i,
  input  logic                   rst_ni,
  input  logic                   abort_i,
  // instruction queue
  input  logic                   q_valid_i,
  input  logic [sinter_isa_pkg::INSN_BITS-1:0] q_insn_i,
  output logic                   q_pop_o,
  // tokens with the compute module
  input  logic                   tok_prev_avail_i,
  output logic                   tok_pop_prev_o,
  output logic                   tok_push_prev_o,
  output logic                   insn_done_o,
  output logic                   idle_o,
  // output buffer read port
  output logic                   out_re_o,
  output logic [OUT_AW-1:0]      out_raddr_o,
  input  logic [COLS*8-1:0]      out_rdata_i,
  // memory write port
  output logic                   mem_wr_valid_o,
  input  logic                   mem_wr_ready_i,
  output logic [31:0]            mem_wr_addr_o,
  output logic [BUS_BYTES*8-1:0] mem_wr_data_o,
  output logic [BUS_BYTES-1:0]   mem_wr_strb_o
);
  localparam int unsigned E     = COLS;
  localparam int unsigned EW    = E * 8;
  localparam int unsigned LB    = $clog2(BUS_BYTES);
  localparam int unsigned BPE   = (E > BUS_BYTES) ? E / BUS_BYTES : 1;
  localparam int unsigned BB    = (BPE > 1) ? $clog2(BPE) : 1;
  localparam int unsigned QD    = 4;
  localparam int unsigned QW    = 32 + EW;

  sinter_isa_pkg::dma_insn_t d;
  assign d = q_insn_i;

  logic       busy_q, gen_q;
  logic [3:0] deps_q;
  logic       accept, is_sync;

  assign is_sync = (d.opcode == sinter_isa_pkg::OP_SYNC);
  // The next Store may start in the cycle the current one completes (no bubble); a Sync waits a
  // cycle so that at most one instruction completes per cycle.
  logic finishing;
  assign finishing = busy_q && !gen_q && !rd_valid_q && q_empty;
  assign accept  = q_valid_i && (!busy_q || (finishing && !is_sync)) &&
                   (!d.deps[sinter_isa_pkg::DEP_POP_PREV] || tok_prev_avail_i);
  assign q_pop_o        = accept;
  assign tok_pop_prev_o = accept && d.deps[sinter_isa_pkg::DEP_POP_PREV];

  // ---- element walk: row sram_base + y*x_size + x, address dram_base + y*y_stride + x*x_stride ---
  logic [15:0] x_q, x_last_q, y_q, y_last_q, row_q;
  logic [31:0] row_addr_q, cur_addr_q, ys_q, xs_q;
  logic        rd_valid_q;
  logic [31:0] rd_addr_q;
  logic        q_full, q_empty, q_pop;
  logic [2:0]  q_count;
  logic [QW-1:0] q_head;
  logic        issue;

  // room for the read being issued and the one whose data arrives next cycle
  assign issue       = busy_q && gen_q && (32'(q_count) + 32'(rd_valid_q) < 32'(QD));
  assign out_re_o    = issue;
  assign out_raddr_o = row_q[OUT_AW-1:0];

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      busy_q     <= 1'b0;
      gen_q      <= 1'b0;
      deps_q     <= '0;
      rd_valid_q <= 1'b0;
    end else begin
      rd_valid_q <= issue;
      if (accept && !is_sync) begin
        busy_q <= 1'b1;
        gen_q  <= 1'b1;
        deps_q <= d.deps;
      end else if (finishing) begin
        busy_q <= 1'b0;
      end
      if (issue && x_q == x_last_q && y_q == y_last_q) gen_q <= 1'b0;
    end
  end

  always_ff @(posedge clk_i) begin
    if (accept) begin
      x_q        <= '0;
      y_q        <= '0;
      x_last_q   <= d.x_size - 16'd1;
      y_last_q   <= d.y_size - 16'd1;
      row_q      <= d.sram_base;
      row_addr_q <= d.dram_base;
      cur_addr_q <= d.dram_base;
      ys_q       <= d.y_stride;
      xs_q       <= d.x_stride;
    end else if (issue) begin
      row_q <= row_q + 16'd1;
      if (x_q == x_last_q) begin
        x_q        <= '0;
        y_q        <= y_q + 16'd1;
        row_addr_q <= row_addr_q + ys_q;
        cur_addr_q <= row_addr_q + ys_q;
      end else begin
        x_q        <= x_q + 16'd1;
        cur_addr_q <= cur_addr_q + xs_q;
      end
    end
    if (issue) rd_addr_q <= cur_addr_q;
  end

  sinter_queue #(.WIDTH(QW), .DEPTH(QD)) u_q (
    .clk_i,
    .rst_ni,
    .flush_i (abort_i),
    .push_i  (rd_valid_q),
    .wdata_i ({rd_addr_q, out_rdata_i}),
    .pop_i   (q_pop),
    .rdata_o (q_head),
    .empty_o (q_empty),
    .full_o  (q_full),
    .count_o (q_count)
  );

  // ---- beats ------------------------------------------------------------------------------------
  logic [31:0] head_addr;
  logic [EW-1:0] head_data;
  logic [BB-1:0] beat_q;
  logic        wr_fire;
  assign head_addr = q_head[QW-1:EW];
  assign head_data = q_head[EW-1:0];
  assign wr_fire   = mem_wr_valid_o && mem_wr_ready_i;

  assign mem_wr_valid_o = busy_q && !q_empty;

  if (E <= BUS_BYTES) begin : g_narrow
    logic [LB-1:0] off;
    assign off           = head_addr[LB-1:0];
    assign mem_wr_addr_o = {head_addr[31:LB], {LB{1'b0}}};
    assign mem_wr_data_o = {(BUS_BYTES / E){head_data}};
    assign mem_wr_strb_o = BUS_BYTES'({E{1'b1}}) << off;
    assign q_pop         = wr_fire;
    assign beat_q        = '0;
  end else begin : g_wide
    logic [BB-1:0] beat_r;
    assign mem_wr_addr_o = head_addr + {{(32-BB-LB){1'b0}}, beat_r, {LB{1'b0}}};
    assign mem_wr_data_o = head_data[beat_r*BUS_BYTES*8 +: BUS_BYTES*8];
    assign mem_wr_strb_o = '1;
    assign q_pop         = wr_fire && (beat_r == BB'(BPE - 1));
    assign beat_q        = beat_r;
    always_ff @(posedge clk_i) begin
      if (!rst_ni || abort_i) beat_r <= '0;
      else if (wr_fire)       beat_r <= q_pop ? '0 : beat_r + BB'(1);
    end
  end

  // ---- completion -------------------------------------------------------------------------------
  always_comb begin
    insn_done_o     = 1'b0;
    tok_push_prev_o = 1'b0;
    if (finishing) begin
      insn_done_o     = 1'b1;
      tok_push_prev_o = deps_q[sinter_isa_pkg::DEP_PUSH_PREV];
    end else if (accept && is_sync) begin
      insn_done_o     = 1'b1;
      tok_push_prev_o = d.deps[sinter_isa_pkg::DEP_PUSH_PREV];
    end
  end

  assign idle_o = !busy_q;

  logic unused_store;
  assign unused_store = ^{d, q_full, beat_q, y_q};
endmodule
