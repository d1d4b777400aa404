// Shares the memory read port between the requesters (0: instruction fetch, 1: accumulator loads
// of the compute module, 2: the load module's DMA); a lower index wins. A request that was
// offered but not accepted keeps the grant until it is, so the address never changes under a
// pending valid.
//
// Responses come back in request order, so a queue of (requester, beats) is enough to route each
// beat. Response beats are registered once before they reach a requester. Every requester has
// reserved room for its beats before asking, so nothing here ever stalls a response.
//
// Abort: requests already accepted by memory will still answer. Their beats are counted into
// `drop_q` and discarded as they arrive, so requests made after the abort are routed correctly.
module sinter_rd_arbiter #(
  parameter int unsigned BUS_BYTES   = 32,
  parameter int unsigned NREQ        = 3,
  parameter int unsigned ROUTE_DEPTH = 32
) (
  input  logic                   clk_i,
  input  logic                   rst_ni,
  input  logic                   abort_i,
  // requesters
  input  logic [NREQ-1:0]        req_valid_i,
  input  logic [NREQ*32-1:0]     req_addr_i,
  input  logic [NREQ*16-1:0]     req_len_i,
  output logic [NREQ-1:0]        req_ready_o,
  output logic [NREQ-1:0]        resp_valid_o,
  output logic [BUS_BYTES*8-1:0] resp_data_o,
  // memory
  output logic                   mem_req_valid_o,
  input  logic                   mem_req_ready_i,
  output logic [31:0]            mem_req_addr_o,
  output logic [15:0]            mem_req_len_o,
  input  logic                   mem_resp_valid_i,
  input  logic [BUS_BYTES*8-1:0] mem_resp_data_i,
  // no request in flight and nothing left to discard
  output logic                   idle_o
);
  localparam int unsigned IW = (NREQ > 1) ? $clog2(NREQ) : 1;
  localparam int unsigned RW = IW + 16;

  // ---- grant ----------------------------------------------------------------------------------
  logic          hold_q;
  logic [IW-1:0] hold_id_q;
  logic [IW-1:0] grant;
  logic          grant_valid;
  logic          route_full, route_empty;
  logic          req_fire;

  always_comb begin
    grant       = '0;
    grant_valid = 1'b0;
    if (hold_q) begin
      grant       = hold_id_q;
      grant_valid = req_valid_i[hold_id_q];
    end else begin
      for (int i = NREQ - 1; i >= 0; i--) begin
        if (req_valid_i[i]) begin
          grant       = IW'(i);
          grant_valid = 1'b1;
        end
      end
    end
  end

  assign mem_req_valid_o = grant_valid && !route_full && !abort_i;
  assign mem_req_addr_o  = req_addr_i[grant*32 +: 32];
  assign mem_req_len_o   = req_len_i[grant*16 +: 16];
  assign req_fire        = mem_req_valid_o && mem_req_ready_i;

  always_comb begin
    req_ready_o = '0;
    req_ready_o[grant] = req_fire;
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      hold_q    <= 1'b0;
      hold_id_q <= '0;
    end else begin
      hold_q    <= mem_req_valid_o && !mem_req_ready_i;
      hold_id_q <= grant;
    end
  end

  // ---- response routing -----------------------------------------------------------------------
  logic [RW-1:0] route_head;
  logic [IW-1:0] head_id;
  logic [15:0]   head_len;
  logic [15:0]   beat_q;
  logic [31:0]   drop_q;
  logic [31:0]   outst_q;       // beats requested and not yet routed
  logic [31:0]   outst_next;
  logic          dropping;
  logic          route_beat;    // a response beat that belongs to a live request
  logic          route_pop;

  assign dropping   = (drop_q != '0);
  assign route_beat = mem_resp_valid_i && !dropping;
  assign head_id    = route_head[RW-1:16];
  assign head_len   = route_head[15:0];
  assign route_pop  = route_beat && (beat_q + 16'd1 == head_len);
  assign outst_next = outst_q + (req_fire ? {16'd0, mem_req_len_o} : 32'd0)
                      - {31'd0, route_beat};

  logic [$clog2(ROUTE_DEPTH+1)-1:0] unused_route_count;
  sinter_queue #(.WIDTH(RW), .DEPTH(ROUTE_DEPTH)) u_route (
    .clk_i,
    .rst_ni,
    .flush_i (abort_i),
    .push_i  (req_fire),
    .wdata_i ({grant, mem_req_len_o}),
    .pop_i   (route_pop),
    .rdata_o (route_head),
    .empty_o (route_empty),
    .full_o  (route_full),
    .count_o (unused_route_count)
  );

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      beat_q  <= '0;
      drop_q  <= '0;
      outst_q <= '0;
    end else if (abort_i) begin
      beat_q  <= '0;
      drop_q  <= drop_q - {31'd0, mem_resp_valid_i && dropping} + outst_next;
      outst_q <= '0;
    end else begin
      if (mem_resp_valid_i && dropping) drop_q <= drop_q - 32'd1;
      if (route_pop)       beat_q <= '0;
      else if (route_beat) beat_q <= beat_q + 16'd1;
      outst_q <= outst_next;
    end
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      resp_valid_o <= '0;
    end else begin
      resp_valid_o <= '0;
      if (route_beat && !abort_i) resp_valid_o[head_id] <= 1'b1;
    end
  end

  always_ff @(posedge clk_i) begin
    resp_data_o <= mem_resp_data_i;
  end

  assign idle_o = route_empty && !dropping && (outst_q == '0) && !hold_q;
endmodule
